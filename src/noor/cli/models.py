"""`noor models list|add|show`: the models this machine runs, the built-in one and diffusers weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from noor.cli.base import BadInput, app, parse_size

if TYPE_CHECKING:
    from noor.engine.sound import AudioSpec

models_app = typer.Typer(help="Models on this machine: the built-in one and diffusers weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """Every model this machine can run: id, family, what it can do, defaults, where its weights are."""
    from noor.engine import registry

    table = Table(title="models")
    for column in ("id", "family", "can do", "defaults", "weights"):
        table.add_column(column)
    for spec in registry.available():
        defaults = f"{spec.native_width}x{spec.native_height}, {spec.native_frames} frames, {spec.default_steps} steps"
        table.add_row(spec.id, spec.family, " ".join(sorted(spec.capabilities)), defaults, spec.source)
    for sound in registry.audio_models():
        table.add_row(sound.id, sound.family, "audio", _audio_defaults(sound), sound.source)
    Console(width=200).print(table)


def _audio_defaults(spec: AudioSpec) -> str:
    layout = {1: "mono", 2: "stereo"}.get(spec.channels, f"{spec.channels} channels")
    return f"{spec.sample_rate} Hz {layout}, up to {spec.max_seconds:g} s, {spec.default_steps} steps"


@models_app.command("add")
def models_add(
    model_id: Annotated[str, typer.Argument(metavar="ID", help="the Noor model id, e.g. wan-1.3b")],
    path: Annotated[Path, typer.Option(help="weights dir, Hugging Face diffusers layout (model_index.json)")],
    family: Annotated[str | None, typer.Option(help="model family (default: detected from the weights)")] = None,
    dtype: Annotated[
        str | None, typer.Option(help="bfloat16, float16 or float32 (default: bfloat16; an audio model float32)")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N]")] = "auto",
    size: Annotated[str | None, typer.Option(help="default WIDTHxHEIGHT (default: the family's)")] = None,
    frames: Annotated[int | None, typer.Option(help="default number of frames")] = None,
    fps: Annotated[int | None, typer.Option(help="default frames per second")] = None,
    steps: Annotated[int | None, typer.Option(help="default denoising steps")] = None,
    guidance: Annotated[float | None, typer.Option(help="default guidance scale")] = None,
    offload: Annotated[str, typer.Option(help="none, model, sequential or group (CPU offload to a GPU)")] = "none",
    vae_tiling: Annotated[bool, typer.Option("--vae-tiling", help="decode in tiles (less memory)")] = False,
    vae_slicing: Annotated[bool, typer.Option("--vae-slicing", help="decode one clip at a time")] = False,
    attention: Annotated[str, typer.Option(help="diffusers attention backend, e.g. native, flash, sage")] = "",
    cache: Annotated[str, typer.Option(help="none, first-block, faster, pab or taylorseer")] = "none",
    cache_threshold: Annotated[float, typer.Option("--cache-threshold", help="First Block Cache threshold")] = 0.05,
    perf_id: Annotated[
        str | None,
        typer.Option("--perf-id", help="catalog architecture for ETAs and prices (default: matched from the weights)"),
    ] = None,
    parallel: Annotated[
        str | None,
        typer.Option(help="every request on K ranks: ulysses=K, ring=K, cfg=2, a mix, or auto=K (perf model's pick)"),
    ] = None,
) -> None:
    """Register a local weights dir under a model id, after checking it is complete and of its family."""
    from noor.engine.diffusers import audio, installed, weights
    from noor.engine.diffusers.options import Options
    from noor.engine.diffusers.parallel import parse as parse_plan

    if audio.is_audio(family, path):  # a sound model: the options that shape a picture do not apply
        picture_only = {
            "--size": size, "--frames": frames, "--fps": fps, "--offload": None if offload == "none" else offload,
            "--vae-tiling": vae_tiling or None, "--vae-slicing": vae_slicing or None, "--attention": attention or None,
            "--cache": None if cache == "none" else cache, "--perf-id": perf_id, "--parallel": parallel,
        }  # fmt: skip
        for option, value in picture_only.items():
            if value is not None:
                raise BadInput(f"{option}: an audio model takes no {option} (it makes sound), got {value!r}")
        if dtype is None:  # an audio model's own default, not a video model's
            dtype = audio.InstalledAudio.dtype
        sound_entry = audio.InstalledAudio(model_id, family or "", str(path), dtype, device, steps, guidance)
        try:
            sound = audio.add(sound_entry)
        except ValueError as err:
            raise BadInput(str(err)) from err
        spec = audio.spec_of(sound)
        print(f"{sound.id}  {sound.family}, {sound.dtype}, {sound.path}  (in {installed.config_path()})")
        print(f"makes sound: {_audio_defaults(spec)}")
        return
    width, height = parse_size(size, None, None) or (None, None)
    entry = installed.InstalledModel(
        id=model_id,
        family=family or "",
        path=str(path),
        dtype=installed.InstalledModel.dtype if dtype is None else dtype,
        device=device,
        width=width,
        height=height,
        frames=frames,
        fps=fps,
        steps=steps,
        guidance=guidance,
        perf_id=perf_id,
        parallel=parallel,
        options=Options(offload, vae_tiling, vae_slicing, attention, cache, cache_threshold),
    )
    try:
        added = installed.add(entry)
    except ValueError as err:
        raise BadInput(str(err)) from err
    print(f"{added.id}  {added.family}, {added.dtype}, {added.path}  (in {installed.config_path()})")
    if added.parallel:
        print(f"each request runs on {parse_plan(added.parallel).gpus} ranks ({added.parallel})")
    if added.perf_id:
        print(f"priced as {added.perf_id} (noor.perf): `noor serve` gives its generations an ETA and a price")
    else:
        choices = ", ".join(added.spec_family.perf_ids) or "a catalog model id (noor perf predict --help)"
        blocks, hidden, _ = weights.transformer_shape(Path(added.path))
        print(
            f"not priced: no catalog architecture of {added.family} has its transformer ({blocks} blocks, hidden"
            f" {hidden}); its generations carry no ETA or price. Give --perf-id (e.g. {choices}) to price it."
        )


@models_app.command("show")
def models_show(model_id: Annotated[str, typer.Argument(metavar="ID", help="a model id")]) -> None:
    """A model's family, capabilities, defaults, shape rules and options."""
    from noor.engine import registry
    from noor.engine.task import TaskError

    sounds = {sound.id: sound for sound in registry.audio_models()}
    if model_id in sounds:
        sound = sounds[model_id]
        for key, value in {
            "id": sound.id, "family": sound.family, "description": sound.description, "weights": sound.source,
            "can do": "audio", "defaults": _audio_defaults(sound) + f", guidance {sound.default_guidance}",
        }.items():  # fmt: skip
            print(f"{key:12} {value}")
        return
    try:
        spec = registry.get(model_id)
    except TaskError as err:
        raise BadInput(f"ID: {str(err).split(': ', 1)[1]}") from err
    rows = {
        "id": spec.id,
        "family": spec.family,
        "description": spec.description,
        "weights": spec.source,
        "can do": " ".join(sorted(spec.capabilities)),
        "defaults": f"{spec.native_width}x{spec.native_height}, {spec.native_frames} frames at {spec.default_fps} fps,"
        f" {spec.default_steps} steps, guidance {spec.default_guidance}",
    }
    geometry = getattr(spec, "geometry", None)
    if geometry is not None:
        rows["sizes"] = f"sides in multiples of {geometry.spatial}, up to {spec.limits.max_side}"
        rows["frames"] = f"{geometry.temporal}k+1, up to {spec.limits.max_frames}" if geometry.temporal else "1 (image)"
    entry = getattr(spec, "entry", None)
    if entry is not None:
        rows["priced as"] = entry.perf_id or "not priced (no catalog architecture; `noor models add --perf-id`)"
        rows["dtype"] = f"{entry.dtype} on {entry.device}"
        rows["options"] = ", ".join(f"{k}={v}" for k, v in vars(entry.options).items())
    for key, value in rows.items():
        print(f"{key:12} {value}")
