"""`noor train`: the group every trainer adds its command to, and `noor train tiny` (the built-in model)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from noor.cli.base import CheckpointEvery, Nproc, Resume, app, fail, run_training

train_app = typer.Typer(help="Train the built-in models, or a LoRA on an open model.", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("tiny")
def train_tiny(
    out: Annotated[Path, typer.Option(help="where to write the pipeline (Hugging Face layout)")] = Path("noor-tiny"),
    steps: Annotated[int, typer.Option(min=1, help="denoiser optimiser steps")] = 5500,
    schedule_steps: Annotated[
        int, typer.Option("--schedule-steps", help="the learning-rate schedule spans the larger of this and --steps")
    ] = 6500,
    vae_steps: Annotated[int, typer.Option("--vae-steps", min=1, help="VAE optimiser steps")] = 1200,
    decoder_steps: Annotated[int, typer.Option("--decoder-steps", min=0, help="decoder refinement steps")] = 1200,
    canvas_decoder_steps: Annotated[
        int,
        typer.Option(
            "--canvas-decoder-steps",
            min=0,
            help="teach the decoder canvases of other sizes than 64x64 (reframes), after --decoder-steps or on "
            "--init-vae's; with --init-denoiser and --tune-steps 0, a round of the VAE alone",
        ),
    ] = 0,
    pool_clips: Annotated[int, typer.Option("--pool-clips", min=1, help="rendered clips encoded for training")] = 12000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    seed: Annotated[int, typer.Option()] = 0,
    bf16: Annotated[bool, typer.Option("--bf16/--fp32", help="bfloat16 autocast (faster only on some CPUs)")] = False,
    attention: Annotated[
        str, typer.Option(help="denoiser self-attention: joint (3D rotary; the shipped weights) or factorised")
    ] = "joint",
    shift: Annotated[
        float, typer.Option(help="noise-level shift in training and sampling (1: none; SD3/Wan shift large inputs)")
    ] = 3.0,
    conv_channels: Annotated[
        int,
        typer.Option("--conv-channels", help="conv stem and head width at full latent resolution (0: none)"),
    ] = 0,
    shared_noise: Annotated[
        float,
        typer.Option("--shared-noise", help="share of each frame's noise common to all frames (0: none)"),
    ] = 0.0,
    image_batch: Annotated[
        int,
        typer.Option("--image-batch", help="first frames (images) trained beside each batch of clips (0: none)"),
    ] = 128,
    image_first: Annotated[
        bool,
        typer.Option(
            "--image-first/--clip-at-once",
            help="sample text-to-video as first frame, then clip (Emu Video's two stages)",
        ),
    ] = True,
    clip_guidance_scale: Annotated[
        float,
        typer.Option("--clip-guidance-scale", help="the saved pipeline's guidance for clips (images take the call's)"),
    ] = 3.0,
    clip_guidance_min_sigma: Annotated[
        float,
        typer.Option("--clip-guidance-min-sigma", help="guide a clip only at noise levels at or above this (0: all)"),
    ] = 0.7,
    tune_steps: Annotated[
        int, typer.Option("--tune-steps", min=0, help="steps of the second denoiser phase (stage 5; 0: none)")
    ] = 1500,
    tune_lr: Annotated[float, typer.Option("--tune-lr", help="the second phase's peak learning rate")] = 2e-4,
    tune_uniform_sigma_p: Annotated[
        float,
        typer.Option("--tune-uniform-sigma-p", help="share of the second phase's noise levels drawn uniformly"),
    ] = 0.5,
    tune_motion_weight: Annotated[
        float,
        typer.Option("--tune-motion-weight", help="extra loss weight where the clip changes, second phase (0: none)"),
    ] = 0.0,
    tune_keyframe_concat: Annotated[
        bool,
        typer.Option(
            "--tune-keyframe-concat/--no-tune-keyframe-concat",
            help="the second phase adds keyframe concatenation (every token sees the given frames at its place)",
        ),
    ] = False,
    init_vae: Annotated[
        str | None, typer.Option("--init-vae", help="start from this pipeline's VAE (skips stages 1-2)")
    ] = None,
    init_denoiser: Annotated[
        str | None,
        typer.Option("--init-denoiser", help="start the second phase from this pipeline's denoiser (skips stage 4)"),
    ] = None,
    nproc: Nproc = 1,
    checkpoint_every: CheckpointEvery = 0,
    resume: Resume = False,
) -> None:
    """Train noor-tiny from scratch on the synthetic world, with a fixed seed (VAE, then denoiser); on --nproc
    processes, the same run (the same seed gives the same loss curve) in less time."""
    from noor.engine.tiny.train import ConfigError, TrainConfig, train

    try:
        cfg = TrainConfig(
            steps=steps,
            schedule_steps=schedule_steps,
            vae_steps=vae_steps,
            decoder_steps=decoder_steps,
            canvas_decoder_steps=canvas_decoder_steps,
            pool_clips=pool_clips,
            batch_size=batch_size,
            seed=seed,
            bf16=bf16,
            attention=attention,
            shift=shift,
            conv_channels=conv_channels,
            shared_noise=shared_noise,
            image_batch=image_batch,
            image_first=image_first,
            clip_guidance_scale=clip_guidance_scale,
            clip_guidance_min_sigma=clip_guidance_min_sigma,
            tune_steps=tune_steps,
            tune_lr=tune_lr,
            tune_uniform_sigma_p=tune_uniform_sigma_p,
            tune_motion_weight=tune_motion_weight,
            tune_keyframe_concat=tune_keyframe_concat,
            init_vae=init_vae,
            init_denoiser=init_denoiser,
        )
    except ConfigError as err:  # the option is the field's name; the CLI says which value it got
        fail("--" + err.field.replace("_", "-"), str(err.value), err.message)
    started = time.perf_counter()
    labels = {
        "vae": "1/5 VAE",
        "decoder": "2/5 decoder",
        "canvases": "2/5 decoder, other canvases",
        "encode": "3/5 encoding clips",
        "denoiser": "4/5 denoiser",
        "tune": "5/5 second phase",
    }
    batches = {"--batch-size": batch_size, "--image-batch": image_batch}
    losses = run_training(train, labels, cfg, out, nproc, checkpoint_every, resume, batches)
    minutes = (time.perf_counter() - started) / 60
    if not losses:  # a round of the VAE alone
        print(f"{out}  the decoder on other canvases ({canvas_decoder_steps} steps), {minutes:.1f} min")
        return
    done = f"{0 if init_denoiser else steps} + {tune_steps}" if tune_steps else f"{steps}"
    print(f"{out}  {done} denoiser steps, final loss {sum(losses[-50:]) / len(losses[-50:]):.4f}, {minutes:.1f} min")
