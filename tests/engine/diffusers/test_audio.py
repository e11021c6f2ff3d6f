"""Audio models on the Stable Audio Open toy: `noor models add`, the registry's AudioSpec, sound per seed and
length, refusals, and the sound muxed into a clip (the worker's path)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from noor.engine import media, registry
from noor.engine.diffusers import audio, installed
from noor.engine.sound import AudioSpec, SoundBackend, SoundRequest
from noor.engine.task import TaskError

Toy = Callable[[str], Path]
FAMILY = "stable-audio-open"
# each toy (toys.AUDIO_TOYS): sample rate, channels, longest sound (s), default guidance
TOY_SOUND = {"stable-audio-open": (8000, 2, 2.048, 7.0), "audioldm2": (16000, 1, 2.048, 3.5)}


@pytest.fixture(scope="module", params=list(TOY_SOUND))
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AudioSpec, SoundBackend]]:
    """Each family's toy installed in its own data dir and loaded once for the module."""
    from tests.engine.diffusers.toys import toy_dir

    family = request.param
    mp = pytest.MonkeyPatch()
    mp.setenv("NOOR_DATA_DIR", str(tmp_path_factory.mktemp(f"{family}-data")))
    from noor.config import settings

    settings.cache_clear()
    audio.add(audio.InstalledAudio(f"{family}-toy", family, str(toy_dir(tmp_path_factory, family)), steps=2))
    spec = registry.get_audio(f"{family}-toy")
    yield spec, spec.load(threads=1)
    mp.undo()
    settings.cache_clear()


def test_the_spec_is_read_from_the_weights(loaded: tuple[AudioSpec, SoundBackend]) -> None:
    spec, _ = loaded
    rate, channels, longest_s, guidance = TOY_SOUND[spec.family]
    assert (spec.sample_rate, spec.channels, spec.max_seconds) == (rate, channels, pytest.approx(longest_s))
    assert (spec.default_steps, spec.default_guidance) == (2, guidance)


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    """By more than 0.1% of the first's peak (the AudioLDM 2 toy's random vocoder peaks near 1e-6)."""
    return bool(np.abs(a - b).max() > 1e-3 * np.abs(a).max() > 0)


def test_sound_is_deterministic_per_seed_as_long_as_asked_and_follows_the_prompt(
    loaded: tuple[AudioSpec, SoundBackend],
) -> None:
    spec, backend = loaded
    steps: list[tuple[int, int]] = []
    first = backend.generate(SoundRequest("a cat in the rain", seconds=1.3, seed=7), lambda d, t: steps.append((d, t)))
    again = backend.generate(SoundRequest("a cat in the rain", seconds=1.3, seed=7))
    other_seed = backend.generate(SoundRequest("a cat in the rain", seconds=1.3, seed=8))
    other_prompt = backend.generate(SoundRequest("a monkey dance on the left", seconds=1.3, seed=7))
    rate, channels, longest_s, _ = TOY_SOUND[spec.family]
    assert steps == [(1, 2), (2, 2)]
    assert first.waveform.shape == (channels, round(1.3 * rate)) and first.sample_rate == rate
    assert first.waveform.dtype == np.float32 and np.abs(first.waveform).max() <= 1.0
    assert np.array_equal(first.waveform, again.waveform)
    assert differs(first.waveform, other_seed.waveform) and differs(first.waveform, other_prompt.waveform)
    longest = backend.generate(SoundRequest("a cat", seconds=spec.max_seconds, seed=1))
    assert longest.waveform.shape[1] == round(longest_s * rate) and longest.seconds == pytest.approx(longest_s)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (SoundRequest("a cat", seconds=0.0), "seconds"),
        (SoundRequest("a cat", seconds=-1.0), "seconds"),
        (SoundRequest("a cat", seconds=2.5), "seconds"),  # over the toy's 2.048 s
        (SoundRequest("   ", seconds=1.0), "prompt"),
        (SoundRequest("a cat", seconds=1.0, steps=0), "steps"),
        (SoundRequest("a cat", seconds=1.0, seed=-1), "seed"),
    ],
)
def test_bad_requests_are_task_errors_naming_the_field(
    loaded: tuple[AudioSpec, SoundBackend], request_: SoundRequest, field: str
) -> None:
    spec, backend = loaded
    with pytest.raises(TaskError) as err:
        spec.check(request_)
    assert err.value.field == field and str(err.value).startswith(f"{field}: ")
    with pytest.raises(TaskError):  # the backend refuses the same, for a caller that did not check
        backend.generate(request_)
    if request_.seconds == 2.5:
        assert "at most 2.048 s" in str(err.value)


def test_audioldm2_refuses_less_than_one_latent(loaded: tuple[AudioSpec, SoundBackend]) -> None:
    spec, _ = loaded
    short = SoundRequest("a cat", seconds=0.004)  # the AudioLDM 2 toy's latent row: 2 mel frames of 64 samples
    if spec.family == "audioldm2":
        with pytest.raises(TaskError, match=r"seconds: model 'audioldm2-toy' makes at least 0.008 s, got 0.004"):
            spec.check(short)
    else:
        spec.check(short)  # Stable Audio cuts any length out of its latents


def test_sound_muxed_into_a_clip(loaded: tuple[AudioSpec, SoundBackend], tmp_path: Path) -> None:
    spec, backend = loaded
    rate, channels, _, _ = TOY_SOUND[spec.family]
    clip = media.write_video(tmp_path / "clip.mp4", np.zeros((12, 16, 16, 3), np.uint8), 8)  # 1.5 s
    sound = backend.generate(SoundRequest("rain on a roof", seconds=1.5, seed=3))
    out = media.mux_audio(clip, sound.waveform, sound.sample_rate, tmp_path / "with_sound.mp4")
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.channels, stream.sample_rate) == ("aac", channels, rate)
        assert abs(float(stream.duration * stream.time_base) - 1.5) <= 1 / 8


def test_models_add_list_show_and_the_video_models_kept(noor: Callable, toy: Toy, tmp_path: Path) -> None:
    from tests.engine.diffusers.toys import register_args

    assert noor(*register_args("wan2.1-t2v", toy("wan2.1-t2v"), "wan"))[0] == 0
    code, out, err = noor("models", "add", "sao", "--path", str(toy(FAMILY)), "--dtype", "float32")  # detected
    assert code == 0, err
    assert out.startswith(f"sao  {FAMILY}, float32") and "8000 Hz stereo, up to 2.048 s, 100 steps" in out
    text = (tmp_path / "data" / "models.toml").read_text()
    assert '[audio."sao"]' in text and '[models."wan"]' in text
    assert list(installed.load()) == ["wan"] and list(audio.load()) == ["sao"]
    assert noor(*register_args("ltx-video", toy("ltx-video"), "ltx"))[0] == 0  # a video add keeps the audio table
    assert list(audio.load()) == ["sao"] and [s.id for s in registry.audio_models()] == ["sao"]
    code, out, _ = noor("models", "list")
    assert code == 0 and "sao" in out and "audio" in out and "wan" in out
    code, out, _ = noor("models", "show", "sao")
    assert code == 0 and "can do       audio" in out and "guidance 7.0" in out
    assert "sao" not in [s.id for s in registry.available()]  # not a video model: never picked for frames
    code, out, err = noor("models", "add", "ldm", "--path", str(toy("audioldm2")), "--dtype", "float32")
    assert code == 0 and out.startswith("ldm  audioldm2, float32") and "16000 Hz mono, up to 2.048 s, 200 steps" in out
    code, _, err = noor("models", "add", "wan", "--path", str(toy(FAMILY)), "--dtype", "float32")
    assert code == 2 and "'wan' is an installed video model" in err
    code, _, err = noor(*register_args("ltx-video", toy("ltx-video"), "sao"))
    assert code == 2 and "'sao' is an installed audio model" in err


def test_bad_audio_dirs_and_options_are_one_line_errors(noor: Callable, toy: Toy, tmp_path: Path) -> None:
    broken = shutil.copytree(toy(FAMILY), tmp_path / "broken")
    shutil.rmtree(broken / "projection_model")
    cases = [
        (["--path", str(broken), "--family", FAMILY], f"incomplete for {FAMILY}; missing: projection_model"),
        (["--path", str(toy(FAMILY)), "--size", "64x64"], "--size: an audio model takes no --size"),
        (["--path", str(toy(FAMILY)), "--cache", "first-block"], "--cache: an audio model takes no --cache"),
        (["--path", str(toy(FAMILY)), "--dtype", "float8"], "--dtype: must be one of"),
        (["--path", str(toy(FAMILY)), "--steps", "0"], "--steps: must be between 1 and 200, got 0"),
        (["--path", str(toy(FAMILY)), "--family", "wan2.1-t2v"], "not a wan2.1-t2v model"),
        (["--path", str(toy("wan2.1-t2v")), "--family", FAMILY], f"holds a WanPipeline, not a {FAMILY} model"),
    ]
    for args, message in cases:
        code, _, err = noor("models", "add", "sao", *args)
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert (
        "it looks like stable-audio-open"
        in noor("models", "add", "s", "--path", str(toy(FAMILY)), "--family", "ltx-video")[2]
    )


def test_no_audio_model_names_the_command_that_adds_one(noor: Callable, toy: Toy) -> None:
    with pytest.raises(registry.NoAudioModel) as err:
        registry.get_audio()
    assert err.value.field == "model"
    assert (
        "no audio model is installed; add one with `noor models add sao --path DIR --family stable-audio-open`"
        in str(err.value)
    )
    # the command it names works as written, DIR being a weights dir
    command = registry.ADD_AUDIO_MODEL.split()[1:]
    code, _, err_text = noor(*[str(toy(FAMILY)) if a == "DIR" else a for a in command], "--dtype", "float32")
    assert code == 0, err_text
    assert registry.get_audio().id == "sao"
    with pytest.raises(registry.UnknownAudioModel, match="unknown audio model; available: sao"):
        registry.get_audio("nope")
