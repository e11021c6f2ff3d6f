"""Trained concepts through the Dream Machine API and the official lumaai SDK: a LoRA trained by `noor train
lora`'s code on the toy Wan, registered with `noor concepts add`, named in `concepts: [{key}]`; refusals, the
lists, a concept removed before its job runs, the Agents API's refusal."""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lumaai
import numpy as np
import pytest
import torch

from noor.engine import media
from noor.engine.diffusers.installed import InstalledModel
from noor.trust import provenance
from tests.api.toy_server import on_loopback, toy_server
from tests.engine.diffusers.toy_lora import FAMILY, toy_lora
from tests.engine.diffusers.toys import toy_dir

PROMPT = "a red square moves right"
SEED = 1234


@pytest.fixture
def server(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    noor: Callable[..., tuple[int, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, Any]]:
    """The toy Wan installed as `wan` (1 fps: a 5 s clip is its 5 frames), the toy LoRA registered as `red_square`
    with `noor concepts add`, every request drawn with one seed; the lumaai SDK on the app."""
    torch.set_num_threads(1)
    # no invisible watermark (it marks each generation by its id), so two drawings of one request can be compared
    monkeypatch.setenv("NOOR_WATERMARK", "false")
    adapter = toy_lora(tmp_path_factory)
    entry = InstalledModel(
        id="wan",
        family=FAMILY,
        path=str(toy_dir(tmp_path_factory, FAMILY)),
        dtype="float32",
        fps=1,
        steps=2,
        perf_id="wan2.1-t2v-1.3b",  # priced, so a concept's price can be compared
    )
    with toy_server(tmp_path, [entry]) as s, pytest.MonkeyPatch.context() as mp, on_loopback(s["client"].app) as port:
        code, out, err = noor("concepts", "add", "red_square", "--path", str(adapter), "--description", "a red square")
        assert code == 0, err
        assert out.startswith("red_square: acts on wan, ")
        s["client"].app.state.ctx.config.aliases["ray-2"] = "wan"  # the SDK's strict Generation names Luma's models
        mp.setattr("noor.api.requests.secrets", types.SimpleNamespace(randbelow=lambda n: SEED))
        s["sdk"] = lumaai.LumaAI(
            auth_token=s["auth"]["Authorization"].removeprefix("Bearer "),
            base_url=f"http://127.0.0.1:{port}/dream-machine/v1",
            max_retries=0,
            _strict_response_validation=True,
        )
        s["adapter"] = adapter
        yield s


def frames_of(s: dict[str, Any], generation: Any, name: str) -> np.ndarray:
    path = s["tmp"] / f"{name}.mp4"
    path.write_bytes(s["client"].get(generation.assets.video).content)
    return media.read_video(path)


def made(s: dict[str, Any], **body: Any) -> Any:
    sdk = s["sdk"]
    created = sdk.generations.create(model="ray-2", prompt=PROMPT, aspect_ratio="1:1", resolution="540p", **body)
    assert s["worker"].run_once()
    done = sdk.generations.get(created.id)
    assert done.state == "completed", done.failure_reason
    return done


def credits(s: dict[str, Any]) -> float:
    return float(s["sdk"].credits.get().credit_balance)


@pytest.mark.slow
def test_a_request_with_a_concept_draws_with_it_and_the_model_is_unchanged_after(server: dict[str, Any]) -> None:
    sdk = server["sdk"]
    assert sdk.generations.concepts.list() == ["red_square"]
    start = credits(server)
    base = frames_of(server, made(server), "base")
    plain_price = start - credits(server)
    drawn = made(server, concepts=[{"key": "red_square"}])
    assert drawn.request.concepts[0].key == "red_square"  # echoed as asked
    assert start - plain_price - credits(server) == pytest.approx(plain_price)  # the same price as without
    with_concept = frames_of(server, drawn, "drawn")
    again = frames_of(server, made(server), "again")
    assert base.shape == with_concept.shape == (5, 544, 544, 3)
    assert np.abs(base.astype(int) - with_concept.astype(int)).max() > 2  # same seed, the adapter changed it
    assert np.array_equal(again, base)  # the adapter was unloaded: the same request draws the same frames
    # the signed manifest names the concept the clip was drawn with; the plain one names none
    signed = provenance.verify((server["tmp"] / "drawn.mp4").read_bytes())
    assert signed.fields.get("concepts") == ["red_square"], signed.fields
    assert "concepts" not in provenance.verify((server["tmp"] / "base.mp4").read_bytes()).fields


def test_unknown_concepts_and_concepts_of_another_model_are_refused_naming_them(server: dict[str, Any]) -> None:
    sdk, start = server["sdk"], credits(server)
    with pytest.raises(lumaai.BadRequestError) as err:
        sdk.generations.create(model="ray-2", prompt=PROMPT, concepts=[{"key": "dolly_zoom"}])
    assert err.value.body == {
        "detail": "concepts: unknown concept 'dolly_zoom'; installed concepts and the models they act on: "
        "red_square (wan)"
    }
    with pytest.raises(lumaai.BadRequestError) as err:  # ray-flash-2 runs on noor-tiny here
        sdk.generations.create(model="ray-flash-2", prompt=PROMPT, concepts=[{"key": "red_square"}])
    assert err.value.body == {
        "detail": "concepts: 'red_square' acts on model 'wan', not on 'tiny' (the request's model); "
        "send it with model 'wan'"
    }
    with pytest.raises(lumaai.BadRequestError, match="a concept may be given once"):
        sdk.generations.create(model="ray-2", prompt=PROMPT, concepts=[{"key": "red_square"}, {"key": "red_square"}])
    assert credits(server) == start and sdk.generations.list().count == 0  # nothing queued, nothing charged
    # the studio's quote checks the same way
    body = {"model": "wan", "prompt": PROMPT, "concepts": [{"key": "nope"}]}
    quote = server["client"].post("/v1/studio/quote", json=body, headers=server["auth"])
    assert quote.status_code == 400 and "unknown concept 'nope'" in quote.json()["detail"]


def test_a_concept_removed_before_its_job_runs_fails_the_job_with_its_credits_back(
    server: dict[str, Any], noor: Callable[..., tuple[int, str, str]]
) -> None:
    sdk, start = server["sdk"], credits(server)
    created = sdk.generations.create(model="ray-2", prompt=PROMPT, concepts=[{"key": "red_square"}])
    assert credits(server) < start  # reserved at create
    assert noor("concepts", "remove", "red_square")[0] == 0
    assert server["worker"].run_once()
    failed = sdk.generations.get(created.id)
    assert failed.state == "failed"
    assert "unknown concept" in (failed.failure_reason or "") and "got 'red_square'" in (failed.failure_reason or "")
    assert credits(server) == pytest.approx(start)
    assert sdk.generations.concepts.list() == []


def test_camera_moves_are_concepts_registered_under_lumas_keys(
    server: dict[str, Any], noor: Callable[..., tuple[int, str, str]]
) -> None:
    client, auth = server["client"], server["auth"]
    assert client.get("/dream-machine/v1/generations/camera_motion/list", headers=auth).json() == []
    assert noor("concepts", "add", "orbit_left", "--path", str(server["adapter"]))[0] == 0
    assert server["sdk"].generations.concepts.list() == ["orbit_left", "red_square"]
    motions = client.get("/dream-machine/v1/generations/camera_motion/list", headers=auth).json()
    assert motions == ["camera orbit left"]  # red_square is no camera move
    options = client.get("/v1/studio/options", headers=auth).json()
    assert options["concepts"] == ["orbit_left", "red_square"]
    assert options["concept_models"] == {"orbit_left": ["wan"], "red_square": ["wan"]}
    assert options["concept_details"][1] == {
        "key": "red_square", "model": "wan", "description": "a red square", "words": {}
    }  # fmt: skip


def test_the_agents_api_refuses_concepts_by_name(server: dict[str, Any]) -> None:
    body = {"prompt": PROMPT, "type": "video", "concepts": [{"key": "red_square"}]}
    refused = server["client"].post("/agents/v1/generations", json=body, headers=server["auth"])
    assert refused.status_code == 400, refused.text
    assert refused.json()["detail"].startswith("concepts: the Agents API has no field for trained concepts; name them")
