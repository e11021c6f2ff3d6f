"""What provenance costs: watermarking and signing a default noor-tiny clip against the time to generate it.

Two clips: the API's default request (Dream Machine `ray-2`, 5 s at 540p 16:9: 40 frames of 960x540 at 8 fps),
and `noor generate`'s default (16 frames at noor-tiny's native 64x64, too small to carry a watermark, so only
signed). Each is generated, marked (`Provenance.mark`, before encoding), encoded as the worker does (an MP4 and
a JPEG thumbnail) and signed (`Provenance.sign_files`); first the signed files are checked (a trusted manifest,
the mark read back from the decoded MP4), then each step is timed in turns. Target: mark + sign <= 10% of the
generation time.

    python benchmarks/provenance.py [--runs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from noor.config import Settings
from noor.engine import media
from noor.engine.task import Media, Task, size_from_aspect
from noor.engine.tiny.backend import TinyBackend
from noor.trust import provenance, signing, watermark
from noor.trust.provenance import Manifest, Provenance

TARGET_RATIO = 0.10
PROMPT = "a red circle moves to the left over a blue sea"


def encode(result: Media, folder: Path) -> dict[str, bytes]:
    """The worker's files for a clip: the MP4 (crf 18) and a JPEG thumbnail."""
    video = media.write_video(folder / "video.mp4", result.frames, result.fps)
    thumb = media.write_image(folder / "thumbnail.jpg", media.thumbnail(result.frames))
    return {video.name: video.read_bytes(), thumb.name: thumb.read_bytes()}


def check(deployment: Provenance, settings: Settings, files: dict[str, bytes], marked: bool) -> None:
    """The signed files verify, and the MP4's pixels carry the mark (when the clip is large enough)."""
    anchors = signing.trust_anchors(settings)
    for name, data in files.items():
        verdict = provenance.verify(data, anchors=anchors)
        assert verdict.ok, f"{name}: {verdict.problem}"
    reading = watermark.read(provenance.frames_of(files["video.mp4"], "video/mp4"))
    assert (reading.status == "found") == marked, reading.describe()
    assert not marked or reading.mark == watermark.Mark.of(deployment.deployment_id, "bench")


def medians_s(steps: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median seconds of each step, timed in turns so a noisy, shared machine hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(runs):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def bench(label: str, task: Task, deployment: Provenance, settings: Settings, runs: int) -> float:
    backend = TinyBackend()
    result = backend.generate([task])[0]  # warm-up, and the clip the other steps work on
    marked, mark = deployment.mark(result.frames, "bench")
    manifest = Manifest("tiny", "1", "created", "bench", region="local", marked=mark)
    with tempfile.TemporaryDirectory() as tmp:
        files = encode(Media(frames=marked, fps=result.fps), Path(tmp))
        check(deployment, settings, deployment.sign_files(files, manifest), marked=mark is not None)
        seconds = medians_s(
            {
                "generate": lambda: backend.generate([task]),
                "encode (MP4 + thumbnail)": lambda: encode(Media(frames=marked, fps=result.fps), Path(tmp)),
                "watermark": lambda: deployment.mark(result.frames, "bench"),
                "sign (C2PA, both files)": lambda: deployment.sign_files(files, manifest),
            },
            runs,
        )
    overhead = seconds["watermark"] + seconds["sign (C2PA, both files)"]
    T, H, W, _ = result.frames.shape
    print(f"\n{label}: {T} frames of {W}x{H}, MP4 {len(files['video.mp4']) / 1e6:.2f} MB")
    for name, s in seconds.items():
        print(f"  {name:<26} {s:8.3f} s")
    ratio = overhead / seconds["generate"]
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"  {'watermark + sign':<26} {overhead:8.3f} s = {ratio:.1%} of generate ({verdict}, target <= 10%)")
    with_encode = overhead / (seconds["generate"] + seconds["encode (MP4 + thumbnail)"])
    print(f"  {'':<26} {'':8}   = {with_encode:.1%} of generate + encode")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir))
        deployment = Provenance.load(settings)
        width, height = size_from_aspect("16:9", "540p")
        api = Task(prompt=PROMPT, width=width, height=height, num_frames=40, fps=8, seed=1)
        cli = Task(prompt=PROMPT, seed=1)  # noor-tiny's native 64x64, 16 frames
        bench("API default (ray-2, 5 s, 540p)", api, deployment, settings, args.runs)
        bench("noor generate default (64x64)", cli, deployment, settings, args.runs)
    print(f"\nthreads {args.threads}, runs {args.runs} (medians); the 1-min load average: {np.round(_load(), 2)}")


def _load() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


if __name__ == "__main__":
    main()
