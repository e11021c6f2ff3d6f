"""Wan 2.1 VACE is priced: a checkpoint of the published shape is matched to its catalog entry (`noor models add`),
and an edit on it gets an ETA and a price, the T2V transformer's plus its VACE blocks'. Until the catalog had
VACE entries the family had no `perf_ids`, so such a model was added unpriced and its edits were free."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from noor.api import pricing
from noor.config import settings
from noor.engine.diffusers import installed, weights
from noor.engine.diffusers.families import FAMILIES
from noor.engine.diffusers.installed import InstalledModel
from noor.perf import estimate_task
from tests.engine.diffusers.test_edits import vace  # noqa: F401 (a fixture)
from tests.engine.diffusers.toys import toy_dir

CHIP = "h100-sxm"
# The released checkpoints' transformer configs, as diffusers' scripts/convert_wan_to_diffusers.py writes them
# (Wan-VACE-1.3B, Wan-VACE-14B; published diffusers copies read the same, see models.toml), and Wan 2.1 T2V 1.3B's
_WAN = {"patch_size": [1, 2, 2], "attention_head_dim": 128, "in_channels": 16, "out_channels": 16, "text_dim": 4096}
VACE_1_3B = _WAN | {"_class_name": "WanVACETransformer3DModel", "num_attention_heads": 12, "num_layers": 30,
                    "ffn_dim": 8960, "vace_layers": list(range(0, 30, 2)), "vace_in_channels": 96}  # fmt: skip
VACE_14B = _WAN | {"_class_name": "WanVACETransformer3DModel", "num_attention_heads": 40, "num_layers": 40,
                   "ffn_dim": 13824, "vace_layers": list(range(0, 40, 5)), "vace_in_channels": 96}  # fmt: skip
T2V_1_3B = _WAN | {"_class_name": "WanTransformer3DModel", "num_attention_heads": 12, "num_layers": 30, "ffn_dim": 8960}


def _with_transformer_config(toy: Path, out: Path, config: dict[str, object]) -> Path:
    """A toy pipeline's dir whose transformer config is a released checkpoint's: what `noor models add` reads to
    match and price it (its weights are never loaded here)."""
    shutil.copytree(toy, out)
    (out / "transformer" / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture
def models(
    vace: Path,  # noqa: F811 (test_edits' toy VACE, a fixture)
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, InstalledModel]]:
    """`vace` and `t2v`, added as `noor models add` adds them (no --perf-id), at Wan's 480p, 81 frames, 50 steps."""
    monkeypatch.setenv("NOOR_DATA_DIR", str(tmp_path / "data"))
    settings.cache_clear()
    common = {"dtype": "float32", "width": 832, "height": 480, "frames": 81, "fps": 16, "steps": 50}
    t2v_toy = toy_dir(tmp_path_factory, "wan2.1-t2v")
    added = {
        "vace": installed.add(InstalledModel(
            id="vace", family="wan2.1-vace", path=str(_with_transformer_config(vace, tmp_path / "v", VACE_1_3B)),
            **common,  # type: ignore[arg-type]
        )),
        "t2v": installed.add(InstalledModel(
            id="t2v", family="wan2.1-t2v", path=str(_with_transformer_config(t2v_toy, tmp_path / "t", T2V_1_3B)),
            **common,  # type: ignore[arg-type]
        )),
    }  # fmt: skip
    yield added
    settings.cache_clear()


@pytest.mark.parametrize(("config", "perf_id"), [(VACE_1_3B, "wan2.1-vace-1.3b"), (VACE_14B, "wan2.1-vace-14b")])
def test_a_released_vace_checkpoint_matches_its_catalog_entry(
    tmp_path: Path, config: dict[str, object], perf_id: str
) -> None:
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(config))
    assert weights.match_perf_id(tmp_path, FAMILIES["wan2.1-vace"]) == perf_id


def test_a_vace_edit_is_quoted_as_its_t2v_plus_the_vace_blocks(models: dict[str, InstalledModel]) -> None:
    assert models["vace"].perf_id == "wan2.1-vace-1.3b" and models["t2v"].perf_id == "wan2.1-t2v-1.3b"
    edit = {"kind": "edit", "source": "acme/g/video.mp4", "prompt": "x", "edit_mode": "flex_1", "width": 832,
            "height": 480, "num_frames": 81, "fps": 16, "seed": 0}  # fmt: skip
    quote, t2v = pricing.quote("vace", edit, CHIP), pricing.quote("t2v", edit, CHIP)
    assert quote.eta_s is not None and quote.price_microcents > 0
    expected = estimate_task("wan2.1-vace-1.3b", 832, 480, 81, 50, CHIP)
    assert quote.eta_s == pytest.approx(expected.latency_s + pricing.output_s(832, 480, 81), abs=1e-3)
    # 45 blocks a pass against 30: the 1.3B's VACE blocks are half its T2V's again (latency 1.49x on an H100)
    assert t2v.eta_s is not None and 1.4 < quote.eta_s / t2v.eta_s < 1.55
    assert quote.price_microcents > t2v.price_microcents
