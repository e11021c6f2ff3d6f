"""`noor eval tiny`: noor-tiny measured on held-out prompts (or a trained concept, or edits and reframes), each
figure beside its target; below target is exit code 1."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from noor.cli.base import BadInput, app, fail, progress

eval_app = typer.Typer(help="Evaluate a model.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _uint8(frame: Any) -> Any:
    return None if frame is None else (frame * 255).round().astype("uint8")


def _median(pairs: list[tuple[float, float]], index: int) -> str:
    return f"{statistics.median(p[index] for p in pairs):.1f}" if pairs else "-"


@eval_app.command("tiny")
def eval_tiny(
    weights: Annotated[Path | None, typer.Option(help="weights dir (default: the packaged ones)")] = None,
    per_language: Annotated[int, typer.Option("--per-language", min=1, max=32, help="prompts per language")] = 32,
    keyframe_checks: Annotated[
        int,
        typer.Option(
            "--keyframe-checks", min=0, help="start-frame clips, loops and middle-keyframe clips, half in each language"
        ),
    ] = 16,
    two_object_scenes: Annotated[
        int, typer.Option("--two-object-scenes", min=0, max=64, help="two-object scenes, each in both languages")
    ] = 8,
    aspect_prompts: Annotated[
        int, typer.Option("--aspect-prompts", min=0, max=64, help="prompts also drawn at 16:9 and 9:16")
    ] = 16,
    seeds: Annotated[int, typer.Option(min=1, max=10, help="draws of each prompt, each with its own seed")] = 1,
    steps: Annotated[int | None, typer.Option(min=1, max=100)] = None,
    batch: Annotated[
        int, typer.Option(min=1, max=64, help="clips drawn at once (the same clips at any batch size, only faster)")
    ] = 8,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the full report here")] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="a reduced set (what the tests run): half the prompts, checks and scenes"),
    ] = False,
    edits: Annotated[
        bool,
        typer.Option(
            "--edits",
            help="check edits and reframes instead, on the same prompts (--aspect-prompts: reframes)",
        ),
    ] = False,
    concept: Annotated[
        Path | None,
        typer.Option(
            "--concept",
            help="check a trained concept instead (an adapter folder: noor train lora --model tiny): its shape on "
            "held-out prompts with and without it, and the base figures with it loaded",
        ),
    ] = None,
) -> None:
    """Check noor-tiny's colour, shape and motion on held-out prompts, and its keyframe fidelity (or, with
    --edits, its edits and reframes)."""
    from noor.engine.task import Task
    from noor.engine.tiny import eval as tiny_eval
    from noor.engine.tiny.backend import TinyBackend

    if quick:
        per_language, keyframe_checks, two_object_scenes, aspect_prompts = tiny_eval.QUICK.values()

    if concept is not None:  # its own prompts: the base eval's other parts are not run
        unused = {"--edits": edits, "--seeds": seeds != 1}
        if not quick:
            unused |= {"--keyframe-checks": keyframe_checks != 16, "--two-object-scenes": two_object_scenes != 8}
            unused |= {"--aspect-prompts": aspect_prompts != 16}
        for option, given in unused.items():
            if given:
                raise BadInput(f"{option}: not part of the --concept eval (held-out and base prompts); leave it out")
    backend = TinyBackend(weights)
    if concept is not None:
        _eval_concept(backend, concept, per_language, steps, batch, json_out)
        return
    prompts = tiny_eval.eval_prompts(per_language, seeds)
    if edits:
        _eval_edits(backend, prompts, min(aspect_prompts, len(prompts)), steps, batch, json_out)
        return

    def generate_clips(clips: list[tiny_eval.Clip]) -> list[Any]:
        tasks = [
            Task(
                c.prompt,
                seed=c.seed,
                steps=steps,
                start_frame=_uint8(c.start_frame),
                end_frame=_uint8(c.end_frame),
                loop=c.loop,
                width=c.width,
                height=c.height,
                keyframes=tuple((index, _uint8(frame)) for index, frame in c.keyframes),
            )
            for c in clips
        ]
        return [media.frames.astype("float32") / 255.0 for media in backend.generate(tasks)]

    with progress() as bar:
        aspect_prompts = min(aspect_prompts, len(prompts))
        job = bar.add_task("evaluating", total=None, info="clips")
        report = tiny_eval.evaluate(
            generate_clips,
            prompts,
            keyframe_checks,
            lambda done, total: bar.update(job, completed=done, total=total),
            two_object_scenes,
            aspect_prompts,
            batch,
            index_checks=keyframe_checks,
        )

    table = Table(title="noor-tiny on held-out prompts")
    table.add_column("language")
    for attribute, target in tiny_eval.TARGETS.items():
        table.add_column(f"{attribute} (>= {target:.0%})", justify="right")
    for lang, acc in report.accuracy.items():
        table.add_row(lang, *(f"{acc[a]:.0%}" for a in tiny_eval.TARGETS))
    for aspect, acc in report.aspects.items():  # the first prompts again, wide and tall
        table.add_row(f"{aspect} ({aspect_prompts})", *(f"{acc[a]:.0%}" for a in tiny_eval.TARGETS))
    Console().print(table)
    for attribute in tiny_eval.TARGETS:
        mistakes = report.mistakes(attribute)
        if mistakes:
            listed = ", ".join(f"{want} as {got} ({n})" for want, got, n in mistakes)
            print(f"most common {attribute} mistakes: {listed}")
    if keyframe_checks:
        ev, seams, first_steps = tiny_eval, report.seam_ratios, report.start_step_ratios
        print(
            f"start frame: colour and shape kept in {report.start_kept:.0%} of clips (>= {ev.START_KEPT_TARGET:.0%}); "
            f"step out of it {statistics.median(first_steps):.1f}x the median step (median over clips)\n"
            f"loop: seam <= {ev.SEAM_RATIO_MAX}x the median step in {report.loop_smooth:.0%} of loops (>= "
            f"{ev.LOOP_SMOOTH_TARGET:.0%}); seam ratio median {statistics.median(seams):.2f}, max {max(seams):.2f}\n"
            f"start and end frames of two scenes: step out of the first {_median(report.pair_step_ratios, 0)}x, "
            f"into the last {_median(report.pair_step_ratios, 1)}x the median step (1 is a blend; not a target yet)\n"
            f"sanity (given frames are held clean, not scored): start PSNR (min) {report.start_psnr_db:.1f} dB, "
            f"loop end PSNR (min) {report.loop_psnr_db:.1f} dB, middle keyframe PSNR (min) "
            f"{report.middle_psnr_db:.1f} dB, {'ok' if report.sane() else 'BROKEN'}\n"
            f"keyframe at the middle index: colour and shape kept before and after it in {report.middle_kept:.0%} of "
            f"clips; step into or out of it {statistics.median(report.middle_step_ratios):.1f}x the median step "
            "(median over clips; not a target yet)"
        )
    if two_object_scenes:
        shares = ", ".join(f"{lang} {share:.0%}" for lang, share in report.two_objects.items())
        print(f"two objects: both in their colour and shape in {shares} (>= {tiny_eval.TWO_OBJECTS_TARGET:.0%})")
    _verdict(report, json_out)


def _verdict(report: Any, json_out: Path | None) -> None:
    """An eval's ending: its report as JSON (`--json`), then "all targets met", or "below target" and exit 1."""
    if json_out:
        json_out.write_text(json.dumps(report.__dict__, indent=2, ensure_ascii=False, default=str) + "\n")
    if not report.passed():
        print("below target")
        raise typer.Exit(1)
    print("all targets met")


def _eval_concept(
    backend: Any, folder: Path, per_language: int, steps: int | None, batch: int, json_out: Path | None
) -> None:
    """`noor eval tiny --concept DIR`: exit 1 below the concept's targets."""
    from noor.engine.task import Concept, Task
    from noor.engine.tiny import concept as tiny_concept
    from noor.engine.tiny import eval as tiny_eval
    from noor.engine.tiny.scene import NEW_SHAPES

    try:
        adapter = tiny_concept.read(folder, backend.pipe)
    except tiny_concept.ConceptError as err:
        raise BadInput(f"--concept: {err}") from None
    words = [w for ws in adapter.config.get("words", {}).values() for w in ws]
    shape = next((s for s in NEW_SHAPES if s in words), None)
    if shape is None:
        fail("--concept", str(folder), f"its words {words} name none of the shapes the detector reads ({NEW_SHAPES})")
    loaded = (Concept(str(adapter.config.get("key") or folder.name), str(folder.resolve())),)

    def generate_clips(clips: list[tiny_eval.Clip], with_concept: bool) -> list[Any]:
        tasks = [Task(c.prompt, seed=c.seed, steps=steps, concepts=loaded if with_concept else ()) for c in clips]
        return [media.frames.astype("float32") / 255.0 for media in backend.generate(tasks)]

    with progress() as bar:
        job = bar.add_task("evaluating", total=None, info="clips")
        report = tiny_eval.evaluate_concept(
            generate_clips, shape, per_language, per_language, batch,
            lambda done, total: bar.update(job, completed=done, total=total),
        )  # fmt: skip
    report.size_bytes = tiny_concept.adapter_bytes(folder)
    table = Table(title=f"noor-tiny with the concept {folder} ({shape}), held-out prompts")
    for column in ("language", f"{shape} with it (>= {tiny_eval.CONCEPT_TARGET:.0%})", f"{shape} without it"):
        table.add_column(column, justify="right")
    table.add_column("colour / motion with it", justify="right")
    for lang, share in report.drawn.items():
        extra = report.concept_attributes[lang]
        table.add_row(
            lang, f"{share:.0%}", f"{report.drawn_without[lang]:.0%}", f"{extra['colour']:.0%} / {extra['motion']:.0%}"
        )
    Console().print(table)
    base = Table(title=f"base prompts without the adapter and with it (within {tiny_eval.BASE_DRIFT_MAX:.0%} points)")
    base.add_column("language")
    for attribute, target in tiny_eval.TARGETS.items():
        base.add_column(f"{attribute} (>= {target:.0%})", justify="right")
    for lang, without in report.base_without.items():
        with_it = report.base_with[lang]
        base.add_row(lang, *(f"{without[a]:.0%} -> {with_it[a]:.0%}" for a in tiny_eval.TARGETS))
    Console().print(base)
    print(f"adapter size {report.size_bytes / 1e6:.2f} MB (<= {tiny_concept.MAX_BYTES / 1e6:.0f} MB)")
    _verdict(report, json_out)


def _eval_edits(
    backend: Any, prompts: list[Any], reframe_prompts: int, steps: int | None, batch: int, json_out: Path | None
) -> None:
    """`noor eval tiny --edits`: edits and reframes on the held-out prompts, measured beside their targets."""
    from dataclasses import replace

    from noor.engine.task import EDIT_LEVELS
    from noor.engine.tiny import eval_edits as ev

    backend.keep_source = False  # the reframes' source regions as drawn; the eval reads them kept and as drawn

    def generate_tasks(tasks: list[Any]) -> list[Any]:
        return list(backend.generate([replace(t, steps=steps) for t in tasks]))

    with progress() as bar:
        job = bar.add_task("evaluating edits", total=None, info="clips")
        report = ev.evaluate_edits(
            generate_tasks,
            prompts,
            reframe_prompts,
            batch,
            lambda done, total: bar.update(job, completed=done, total=total),
        )
    table = Table(title="noor-tiny edits and reframes on held-out prompts")
    for column in ("figure", "measured", "target"):
        table.add_column(column)
    adhere = report.adhere()
    table.add_row(
        f"adhere: shape and motion kept ({len(report.adhere_rows)})",
        f"{adhere['kept']:.0%}",
        f">= {ev.ADHERE_KEPT_TARGET:.0%}",
    )
    table.add_row("adhere: new colour", f"{adhere['colour']:.0%}", f">= {ev.ADHERE_COLOUR_TARGET:.0%}")
    for mode in [m for m in ev.ADHERE if any(r["mode"] == m for r in report.adhere_rows)]:
        got = report.adhere(mode)
        table.add_row(
            f"  {mode} (level {EDIT_LEVELS[mode]}): kept / colour / track px",
            f"{got['kept']:.0%} / {got['colour']:.0%} / {ev.median_track(report.adhere_rows, mode):.1f}",
            "",
        )
    reimagine = report.reimagine()
    shares = " / ".join(f"{reimagine[a]:.0%}" for a in ev.ATTRIBUTES)
    table.add_row(
        f"reimagine: colour / shape / motion ({len(report.reimagine_rows)})",
        shares,
        f">= {ev.REIMAGINE_TARGET:.0%} each",
    )
    for mode in [m for m in ev.REIMAGINE if any(r["mode"] == m for r in report.reimagine_rows)]:
        got = report.reimagine(mode)
        shares = " / ".join(f"{got[a]:.0%}" for a in ev.ATTRIBUTES)
        track = ev.median_track(report.reimagine_rows, mode)
        table.add_row(f"  {mode} (level {EDIT_LEVELS[mode]}): ... / track px", f"{shares} / {track:.1f}", "")
    for name in ev.REFRAMES:
        got = report.reframe(name)
        table.add_row(
            f"reframe {name}: source region PSNR as drawn, median (lowest)",
            f"{got['drawn_median_db']:.1f} dB ({got['drawn_min_db']:.1f})",
            f">= {ev.REFRAME_PSNR_DB:.0f} dB",
        )
        table.add_row(
            "  with the source's pixels kept (the default output; sanity)",
            f"{got['median_db']:.1f} dB ({got['min_db']:.1f})",
            "(by construction)",
        )
        table.add_row(f"reframe {name}: at the asked size", f"{got['sized']:.0%}", "100%")
    Console(width=120).print(table)
    _verdict(report, json_out)
