"""Trained concepts on noor-tiny: the crescent the base model never saw, its data folder, a short training, loading
for one task and unloading bitwise, and the refusals."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from noor.engine.task import Concept, Task
from noor.engine.tiny import concept
from noor.engine.tiny.backend import TinyBackend, weights_dir
from noor.engine.tiny.detector import detect
from noor.engine.tiny.scene import NEW_SHAPES, SHAPES, Scene, Thing, coverage, render, sample_scene


def test_crescent_centre_is_its_area_centroid() -> None:
    py, px = np.mgrid[0:200, 0:200].astype(np.float64) + 0.5
    cov = coverage("crescent", px, py, np.array([100.0]), np.array([100.0]), np.array([40.0]))[0]
    ys, xs = np.nonzero(cov > 0.5)
    assert abs(xs.mean() + 0.5 - 100.0) < 1.0 and abs(ys.mean() + 0.5 - 100.0) < 1.0
    assert 0.8 < cov.sum() / (np.pi * 40.0**2) < 0.9  # 2.65 r^2: a crescent, not a disc


def test_detector_reads_the_crescent_only_when_asked_and_not_base_shapes_as_it() -> None:
    rng = np.random.default_rng(5)
    candidates = (*SHAPES, *NEW_SHAPES)
    for _ in range(6):
        clip = render(sample_scene(rng, 0.0, shape="crescent"))
        assert detect(clip, candidates).shape == "crescent"
        assert detect(clip).shape in SHAPES  # the base eval's candidates are unchanged
        for shape in SHAPES:
            assert detect(render(sample_scene(rng, 0.0, shape=shape)), candidates).shape == shape
    assert "crescent" not in SHAPES
    with pytest.raises(ValueError, match="shapes"):
        detect(render(Scene("black", (Thing("circle", "red", "still", 32, 32, 9, 0),))), ("moon",))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    concept.render_data(folder, "crescent", clips=4, prior=0.25, seed=1)
    return folder


def test_data_folder_has_both_languages(data: Path) -> None:
    rows = [json.loads(line) for line in (data / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 8 and all((data / r["file"]).is_file() for r in rows)
    files = sorted({r["file"] for r in rows})
    assert len(files) == 4
    for name in files[:3]:  # 3 crescents, then 1 clip of a base shape
        captions = [r["caption"] for r in rows if r["file"] == name]
        assert any("crescent" in c for c in captions) and any("هلال" in c for c in captions)
    assert not any("crescent" in r["caption"] or "هلال" in r["caption"] for r in rows if r["file"] == files[3])
    with pytest.raises(ValueError, match="clips"):
        concept.render_data(data / "x", clips=201)


@pytest.fixture(scope="module")
def adapter(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, concept.TinyLoraResult]:
    out = tmp_path_factory.mktemp("adapter") / "crescent"
    cfg = concept.TinyLoraConfig(steps=4, batch_size=2, image_batch=2, lr=5e-3, embed_lr=5e-2)
    return out, concept.train(weights_dir(), data, out, cfg)


def test_training_writes_a_small_adapter_with_its_record(adapter: tuple[Path, concept.TinyLoraResult]) -> None:
    out, _ = adapter
    for name in (concept.WEIGHT_NAME, concept.CONFIG_NAME, concept.EMBEDDINGS_NAME):
        assert (out / name).is_file()
    assert 0 < concept.adapter_bytes(out) <= concept.MAX_BYTES
    record = json.loads((out / concept.CONFIG_NAME).read_text(encoding="utf-8"))
    assert record["model"] == "tiny" and record["key"] == "crescent"
    assert record["words"] == {"en": ["crescent"], "ar": ["هلال"]}
    assert record["clips"] == 4 and record["examples"] == 8 and record["steps"] == 4
    assert len(record["losses"]) == 4 and all(math.isfinite(v) and v > 0 for v in record["losses"])
    assert record["seconds"] > 0
    words = concept.read(out, TinyBackend().pipe).words
    assert words == ["crescent", "هلال"]


def _snapshot(backend: TinyBackend) -> dict[str, torch.Tensor]:
    parts = {"t": backend.pipe.transformer, "e": backend.pipe.text_encoder, "v": backend.pipe.vae}
    return {p + k: v.clone() for p, m in parts.items() for k, v in m.state_dict().items()}


def test_a_task_draws_with_its_concept_and_the_weights_come_back_bitwise(
    adapter: tuple[Path, concept.TinyLoraResult],
) -> None:
    out, _ = adapter
    backend = TinyBackend()
    before, vocab = _snapshot(backend), list(backend.pipe.text_encoder.tokenizer.vocab)
    modules = [type(m) for m in backend.pipe.transformer.modules()]
    with_it = (Concept("crescent", str(out)),)
    prompt = "a red crescent moves left"
    plain, drawn, again = backend.generate([
        Task(prompt, seed=3, steps=2),
        Task(prompt, seed=3, steps=2, concepts=with_it),
        Task("a blue circle rises", seed=4, steps=2),
    ])  # fmt: skip
    after = _snapshot(backend)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert backend.pipe.text_encoder.tokenizer.vocab == vocab
    assert [type(m) for m in backend.pipe.transformer.modules()] == modules  # no peft layer left behind
    assert not np.array_equal(plain.frames, drawn.frames)
    # the base task beside them is what it is alone (its group never held the adapter)
    alone = backend.generate([Task("a blue circle rises", seed=4, steps=2)])[0]
    assert np.array_equal(again.frames, alone.frames)


def _broken(out: Path, tmp_path: Path, change: Callable[[Path], None]) -> Path:
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in (concept.WEIGHT_NAME, concept.CONFIG_NAME, concept.EMBEDDINGS_NAME):
        (folder / name).write_bytes((out / name).read_bytes())
    change(folder)
    return folder


def _model(name: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        record = json.loads((folder / concept.CONFIG_NAME).read_text(encoding="utf-8"))
        (folder / concept.CONFIG_NAME).write_text(json.dumps({**record, "model": name}), encoding="utf-8")

    return change


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda f: (f / concept.EMBEDDINGS_NAME).unlink(), "has no word_embeddings.safetensors"),
        (lambda f: (f / concept.WEIGHT_NAME).unlink(), "has no pytorch_lora_weights.safetensors"),
        (_model("wan-toy"), "for model 'wan-toy', not 'tiny'"),
        (lambda f: (f / concept.CONFIG_NAME).write_text("{", encoding="utf-8"), "is not JSON"),
        (lambda f: (f / concept.WEIGHT_NAME).write_bytes(b"junk"), "cannot read its safetensors"),
    ],
)
def test_bad_adapters_are_refused_with_the_reason(
    adapter: tuple[Path, concept.TinyLoraResult], tmp_path: Path, change: Callable[[Path], None], reason: str
) -> None:
    backend = TinyBackend.__new__(TinyBackend)
    backend.pipe = _pipe()
    folder = _broken(adapter[0], tmp_path, change)
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        backend.check_concept(folder)
    with pytest.raises(ValueError, match="is not a folder"):
        backend.check_concept(tmp_path / "nowhere")


_PIPE: list[object] = []


def _pipe() -> object:
    if not _PIPE:
        _PIPE.append(TinyBackend().pipe)
    return _PIPE[0]


def test_a_frozen_prior_teaches_base_rows_the_frozen_models_own_prediction() -> None:
    """prior_target "frozen": the base-shape rows regress the denoiser with its adapter off, at the same noisy
    input. A fresh LoRA (B = 0) is the frozen model, so those rows' loss is exactly 0 while the clip rows' is not;
    once the LoRA moves, they are not 0 either."""
    from peft import LoraConfig

    from noor.engine.tiny.pipeline import NoorTinyPipeline
    from noor.engine.tiny.train import Batch, training_loss

    pipe = NoorTinyPipeline.from_pretrained(str(weights_dir()))
    transformer, text_encoder = pipe.transformer, pipe.text_encoder
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q"]))

    frozen = concept.frozen_model(transformer)
    latents = torch.randn(2, transformer.config.in_channels, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    batch = Batch(latents, torch.zeros(2, 16, dtype=torch.bool), ["a red circle moves left", "a blue square"])

    def loss(taught: list[bool]) -> float:
        with torch.no_grad():
            got = training_loss(
                transformer, text_encoder, batch, torch.Generator().manual_seed(1), teacher=frozen,
                taught=torch.tensor(taught),
            )  # fmt: skip
        return float(got)

    assert loss([True, True]) == 0.0 and loss([False, False]) > 0.01
    assert 0.0 < loss([True, False]) < loss([False, False])
    with torch.no_grad():  # the LoRA moves: the adapted model now differs from the frozen one
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    assert loss([True, True]) > 0.0
    with pytest.raises(ValueError, match="prior_target"):
        concept.TinyLoraConfig(prior_target="teacher").check()
