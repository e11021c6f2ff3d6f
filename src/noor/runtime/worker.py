"""A worker: claims jobs from the store, runs them on the engine, writes assets, reports back.

The model is loaded once per worker and kept. With `max_batch` > 1 a claim takes up to that many queued jobs
of one batch key (`Store.claim_batch`, `noor.scheduling.batching`) and the engine runs them as one call, with
each job's own prompt and seed; each job then has its own heartbeats, files, completion, webhook and refund.

Progress doubles as the heartbeat: each denoising step may extend the leases, and when the store says a job is
no longer ours (deleted, or the lease was lost) that job ends failed "Deleted" at once and its result is
dropped; the others of its batch go on. When none is left the step callback raises `Cancelled`, so the engine
stops between steps. Before the first step (reading sources, loading the model, starting a split's ranks) and
after the last (decoding, the files) a `LeaseKeeper` thread beats instead (`noor.runtime.leases`); a job it
loses is dropped, and when none is left the worker returns once that phase is over (a model being loaded is
loaded, and kept). A call that fails fails each job with the reason, unless the attempt failed for a reason
outside the requests (`AttemptFailed`: a rank died): then each job goes back to the queue, to be retried.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

import noor
from noor.config import settings
from noor.engine import concepts, media, registry
from noor.engine.backend import AttemptFailed, Backend, Cancelled
from noor.engine.resample import resize
from noor.engine.sound import SoundBackend, SoundRequest
from noor.engine.task import Media, Task
from noor.jobs.assets import asset_key
from noor.perf.parallelism import ParallelPlan
from noor.runtime.leases import LeaseKeeper, beat_every_s
from noor.scheduling.batching import check_batch
from noor.trust import moderation
from noor.trust.provenance import Action, Ingredient, Manifest, Provenance, sniff

log = logging.getLogger("noor.worker")


class Job(Protocol):
    """A claimed job: a store's Generation, or a remote worker's copy of one."""

    @property
    def id(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def task(self) -> dict[str, Any]: ...
    @property
    def request(self) -> dict[str, Any]: ...
    @property
    def generation_type(self) -> str: ...
    @property
    def batch_key(self) -> str | None: ...


class Jobs(Protocol):
    """What a worker needs of the job store: `Store` itself, or `remote.Server` through the worker API."""

    def claim_batch(
        self,
        worker: str,
        lease_s: float,
        models: Sequence[str] | None = None,
        regions: Sequence[str] | None = None,
        *,
        max_batch: int = 1,
    ) -> Sequence[Job]: ...
    def heartbeat(
        self, generation_id: str, worker: str, lease_s: float, progress: float | None = None, *, preview: str | None
    ) -> bool: ...
    def complete(self, generation_id: str, worker: str, assets: dict[str, Any]) -> bool: ...
    def fail(self, generation_id: str, worker: str, reason: str) -> bool: ...
    def release(self, generation_id: str, worker: str) -> bool: ...


class Files(Protocol):
    """What a worker needs of the asset store."""

    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes) -> str: ...


class Stop(Protocol):
    """A threading or multiprocessing Event."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class WorkerConfig:
    name: str
    models: list[str] = field(default_factory=lambda: ["tiny"])  # and the registry's `on_every_worker` models
    lease_s: float = 30.0
    poll_s: float = 0.25
    heartbeat_s: float = 1.0  # at most this often a denoising step writes to the store (and sees a delete)
    preview_s: float | None = 2.0  # at most this often a preview of the work so far is written; None: never
    region: str | None = None
    max_batch: int = 1  # up to this many queued jobs of one batch key run as one engine call

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {self.max_batch!r}")


def task_from_json(data: dict[str, Any], assets: Files, model: str | None = None) -> Task:
    """The engine task a job stored, with keyframes (or the source clip of an upscale, an edit or a reframe) read
    back from the asset store. `start` and `end` are `{"asset": key}` (an image) or `{"asset": key, "frame":
    "first"|"last"}` (a frame of an earlier video); `keyframes` lists the same with an `index` (a frame of the
    task's num_frames) for frames pinned inside the clip. `concepts` (keys) are resolved to their adapter folders
    now (`noor.engine.concepts`): a concept removed since the request fails the job, naming it."""
    kind = data.get("kind")
    if kind == "upscale":  # the clip at a new size: its frames, at its frame rate
        source = read_source(assets.get(data["source"]), data["source"])
        return Task(
            prompt="",
            width=data["width"],
            height=data["height"],
            num_frames=len(source.frames),
            fps=source.fps,
            source=source,
        )
    if kind in ("edit", "reframe"):  # a video or an image (one frame) redrawn, or placed on a new canvas
        source = read_source(assets.get(data["source"]), data["source"], data.get("fps") or 8)
        if data.get("source_size"):  # a reframe's source at the size it takes on the canvas
            width, height = data["source_size"]
            source = Media(frames=resize(source.frames, width, height), fps=source.fps)
        position = data.get("source_position")
        return Task(
            prompt=data.get("prompt") or "",
            negative_prompt=data.get("negative_prompt", ""),
            width=data["width"],
            height=data["height"],
            num_frames=data.get("num_frames") or len(source.frames),
            fps=data.get("fps") or source.fps,
            steps=data.get("steps"),
            guidance=data.get("guidance"),
            seed=data["seed"],
            source=source,
            edit_mode=data["edit_mode"] if kind == "edit" else None,
            source_prompt=data.get("source_prompt") if kind == "edit" else None,
            reframe=kind == "reframe",
            source_position=tuple(position) if position is not None else None,
        )

    def keyframe(ref: dict[str, Any] | None) -> np.ndarray | None:
        return read_keyframe(assets, ref) if ref else None

    return Task(
        prompt=data["prompt"],
        negative_prompt=data.get("negative_prompt", ""),
        width=data["width"],
        height=data["height"],
        num_frames=data["num_frames"],
        fps=data["fps"],
        steps=data.get("steps"),
        guidance=data.get("guidance"),
        seed=data["seed"],
        start_frame=keyframe(data.get("start")),
        end_frame=keyframe(data.get("end")),
        loop=data.get("loop", False),
        keyframes=tuple((int(ref["index"]), read_keyframe(assets, ref)) for ref in data.get("keyframes") or ()),
        concepts=concepts.for_task(data.get("concepts") or [], model),
    )


def read_keyframe(assets: Files, ref: dict[str, Any]) -> np.ndarray:
    """A keyframe's pixels: a stored image, or the first or last frame of an earlier video (`ref["frame"]`)."""
    raw = assets.get(ref["asset"])
    if ref.get("frame") in ("first", "last"):  # a frame of an earlier video (extend)
        with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
            f.write(raw)
            f.flush()
            frames = media.read_video(f.name)
        return frames[0] if ref["frame"] == "first" else frames[-1]
    with Image.open(io.BytesIO(raw)) as image:
        return np.asarray(image.convert("RGB"))


def read_source(raw: bytes, key: str, fps: int = 8) -> Media:
    """A stored source file as Media: an MP4's frames at its frame rate, or an image as one frame (at `fps`)."""
    if key.lower().endswith(".mp4"):
        with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
            f.write(raw)
            f.flush()
            frames, rate = media.read_clip(f.name)
        return Media(frames=frames, fps=round(rate) or fps)
    with Image.open(io.BytesIO(raw)) as image:
        return Media(frames=np.asarray(image.convert("RGB"))[None], fps=fps)


PREVIEW_SIDE = 256
# a job kind -> its manifest's action
ACTIONS: dict[str, Action] = {"upscale": "upscaled", "edit": "edited", "reframe": "reframed", "audio": "edited"}
SOURCED = ("upscale", "edit", "reframe", "audio")  # job kinds made from one source file (their manifest's parent)


def preview_frames(frames: np.ndarray) -> np.ndarray:
    """A preview is at most PREVIEW_SIDE on its long side (even sides, for H.264)."""
    H, W = frames.shape[1:3]
    scale = min(1.0, PREVIEW_SIDE / max(H, W))
    if scale == 1.0:
        return frames
    return resize(frames, max(2, 2 * round(W * scale / 2)), max(2, 2 * round(H * scale / 2)))


def encode(result: Media, image_format: str = "png") -> dict[str, bytes]:
    """Files for a result: the video or image itself and a JPEG thumbnail."""
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if result.is_image:
            path = media.write_image(Path(tmp) / f"image.{image_format}", result.frames[0])
        else:
            path = media.write_video(Path(tmp) / "video.mp4", result.frames, result.fps)
        files[path.name] = path.read_bytes()
        thumb = media.write_image(Path(tmp) / "thumbnail.jpg", media.thumbnail(result.frames))
        files[thumb.name] = thumb.read_bytes()
    return files


def model_version(model: str) -> str:
    """What a manifest says of the model's version: its family and weights, and this Noor's version (the
    registry keeps no version of its own for a model)."""
    import noor

    try:
        spec = registry.get(model)
    except registry.UnknownModel:
        return f"noor {noor.__version__}"
    return f"{spec.family} ({spec.source}), noor {noor.__version__}"


def ingredients(data: dict[str, Any], assets: Files) -> tuple[Ingredient, ...]:
    """What an output was made from, for its manifest: the source of an upscale, an edit or a reframe (its
    parent), a clip's keyframes (its start and end frames, and those pinned at indexes)."""
    if data.get("kind") in SOURCED:  # the clip (or image) it was made from
        source = data["source"]
        raw = assets.get(source)
        mime = sniff(raw) or "application/octet-stream"
        return (Ingredient(f"source {mime.split('/')[0]} {source}", raw, mime, "parentOf"),)
    refs = [(f"{which} keyframe", data.get(which)) for which in ("start", "end")]
    refs += [(f"keyframe at frame {ref['index']}", ref) for ref in data.get("keyframes") or ()]
    out = []
    for title, ref in refs:
        if ref:
            raw = assets.get(ref["asset"])
            out.append(Ingredient(f"{title} {ref['asset']}", raw, sniff(raw) or "image/png", "inputTo"))
    return tuple(out)


class _ReadOnce:
    """An asset store whose reads are kept for one batch, so a job's inputs are fetched once."""

    def __init__(self, assets: Files):
        self.assets, self.read = assets, dict[str, bytes]()

    def get(self, key: str) -> bytes:
        if key not in self.read:
            self.read[key] = self.assets.get(key)
        return self.read[key]

    def put(self, key: str, data: bytes) -> str:
        return self.assets.put(key, data)


class LoadBackend(Protocol):
    """Loads a deployment's model (its weights and threads); `parallel`: on the ranks of that split."""

    def __call__(self, model: str, parallel: ParallelPlan | None = None) -> Backend: ...


class Worker:
    def __init__(self, store: Jobs, assets: Files, config: WorkerConfig, load_backend: LoadBackend):
        self.store, self.assets, self.config = store, assets, config
        self.models = registry.worker_models(config.models)  # what it claims
        self._load_backend = load_backend
        self._carried = {spec.id: spec for spec in registry.on_every_worker()}
        self._backends: dict[str, tuple[str | None, Backend]] = {}  # model -> (its split, its backend)
        self._sound: dict[str, SoundBackend] = {}  # audio model -> its loaded backend
        # signs and marks every output (NOOR_PROVENANCE, NOOR_WATERMARK); bad credentials stop the worker here
        self.provenance = Provenance.load(settings())

    def backend(self, model: str, parallel: str | None = None) -> Backend:
        """The model's backend, loaded on first use and kept: on one rank, or on the ranks of the split a job was
        priced with (`parallel`, e.g. "ulysses=2"; a job of another split stops these ranks and starts its own).
        `load_backend` loads the deployment's models; the ones every worker carries come from the registry."""
        held = self._backends.get(model)
        if held is None or held[0] != parallel:
            if held is not None:
                close = getattr(held[1], "close", None)
                if close is not None:
                    close()  # its ranks' memory and chips are the next split's
            carried = self._carried.get(model)
            plan = ParallelPlan.from_text(parallel) if parallel else None
            if carried is not None:
                backend = carried.load()
            else:
                backend = self._load_backend(model, parallel=plan) if plan else self._load_backend(model)
            self._backends[model] = (parallel, backend)
        return self._backends[model][1]

    def audio_models(self) -> list[str]:
        """The audio models installed here (models.toml's audio table, read again when it changes): this worker also
        adds sound to clips with them. One that cannot be read is logged and skipped: the video jobs go on."""
        try:
            return [spec.id for spec in registry.audio_models()]
        except Exception as err:
            log.warning("worker %s claims no audio jobs: its audio models cannot be read: %s", self.config.name, err)
            return []

    def run_once(self) -> bool:
        """Claim and run one job, or one batch; False when the queue had nothing for this worker."""
        regions = [self.config.region] if self.config.region else None
        models = [*self.models, *self.audio_models()]
        jobs = self.store.claim_batch(
            self.config.name, self.config.lease_s, models=models, regions=regions, max_batch=self.config.max_batch
        )
        if not jobs:
            return False
        self.run_batch(jobs)
        return True

    def run_forever(self, stop: Stop) -> None:
        failures = 0
        while not stop.is_set():
            try:
                busy = self.run_once()
                failures = 0
            except Exception as err:  # the store or server is unreachable: keep trying, slower
                failures += 1
                log.warning("worker %s cannot reach its jobs: %s", self.config.name, err)
                busy = False
            if not busy:
                stop.wait(self.config.poll_s * min(40, 2**failures))

    def run(self, job: Job) -> None:
        self.run_batch([job])

    def run_batch(self, jobs: Sequence[Job]) -> None:
        """Run jobs this worker holds as one engine call: one job, or a batch of one batch key (mixed shapes are
        refused before anything runs: `SchedulingError`). Each job ends on its own, completed or failed."""
        check_batch(jobs)
        every_s = beat_every_s(self.config.heartbeat_s, self.config.lease_s)
        with LeaseKeeper(self.store, self.config.name, self.config.lease_s, every_s) as leases:
            leases.keep(job.id for job in jobs)  # until the first step; stopped whatever happens
            if jobs[0].task.get("kind") == "audio":  # never batched (no batch key): one job
                self._run_audio(jobs[0], leases)
            else:
                self._run_batch(jobs, leases)

    def _run_audio(self, job: Job, leases: LeaseKeeper) -> None:
        """Sound for a completed clip: the audio model makes the clip's length of it, muxed in with the video stream
        copied; stored as this job's video with its thumbnail and manifest (its source the parent). The lease keeper
        beats throughout (the sound is a few steps; a lost job ends "Deleted" and its result is dropped)."""
        data, reads = job.task, _ReadOnce(self.assets)  # the source: read once, named again in the manifest
        try:
            spec = registry.get_audio(job.model)
            raw = reads.get(data["source"])
            with tempfile.TemporaryDirectory() as tmp:
                source = Path(tmp) / "source.mp4"
                source.write_bytes(raw)
                frames, rate = media.read_clip(source)
                request = SoundRequest(
                    data["prompt"], seconds=len(frames) / rate, seed=data["seed"],
                    negative_prompt=data.get("negative_prompt") or "", steps=data.get("steps"),
                )  # fmt: skip
                spec.check(request)
                if job.model not in self._sound:  # loaded on first use and kept, as the video models are
                    self._sound[job.model] = spec.load(threads=settings().threads)
                sound = self._sound[job.model].generate(request)
                video = media.mux_audio(source, sound.waveform, sound.sample_rate, Path(tmp) / "video.mp4")
                thumb = media.write_image(Path(tmp) / "thumbnail.jpg", media.thumbnail(frames))
                files = {video.name: video.read_bytes(), thumb.name: thumb.read_bytes()}
            version = f"{spec.family} ({spec.source}), noor {noor.__version__}"
            if job.id not in leases.lost():  # else deleted while it ran: failed already, its result is dropped
                self._store(job, files, Manifest(
                    model=job.model, model_version=version, action=ACTIONS["audio"], generation_id=job.id,
                    region=self.config.region, ingredients=ingredients(data, reads),
                    marked=None,  # the frames are the source's as they were (marked when it was made): not redrawn
                ), is_image=False)  # fmt: skip
        except Exception as err:
            log.exception("generation %s failed", job.id)
            self._fail(job, err)
        leases.drop(job.id)

    def _run_batch(self, jobs: Sequence[Job], leases: LeaseKeeper) -> None:
        name, lease_s = self.config.name, self.config.lease_s
        last_beat = time.monotonic()  # the claim's lease runs from about now
        reads = _ReadOnce(self.assets)  # keyframes and sources: read for the task, named again in the manifest
        live: dict[str, Job] = {}  # still ours: beaten, and completed at the end
        tasks: list[Task] = []
        for job in jobs:  # 1. each task, keyframes (or source clip) included; one that cannot be read fails alone
            try:
                tasks.append(task_from_json(job.task, reads, job.model))
                live[job.id] = job
            except Exception as err:
                log.exception("generation %s failed", job.id)
                leases.drop(job.id)
                self._fail(job, err)
        ran = [job for job in jobs if job.id in live]
        if not ran:
            return
        lead = ran[0]  # the engine's preview draws the first task's clip

        def settle() -> bool:
            """The jobs whose lease the keeper lost (it failed them "Deleted") are gone; is any left?"""
            for job_id in leases.lost():
                live.pop(job_id, None)
            return bool(live)

        def gone(job: Job) -> None:
            """The store says `job` is no longer ours (deleted, or its lease lost): it ends now, the batch goes on."""
            live.pop(job.id, None)
            self.store.fail(job.id, name, "Deleted")
            if not live:
                raise Cancelled

        def on_progress(done: int, total: int) -> None:
            nonlocal last_beat
            if leases.running:  # the first step (or one after the last: a second pass): the steps beat from here
                leases.stop()
                if not settle():
                    raise Cancelled
            now = time.monotonic()
            if now - last_beat < min(self.config.heartbeat_s, lease_s / 3) and done < total:
                return
            last_beat = now
            for job in list(live.values()):
                if not self.store.heartbeat(job.id, name, lease_s, progress=0.95 * done / max(1, total), preview=None):
                    gone(job)
            if done >= total:  # decoding and the files come next, with no steps to beat
                leases.keep(live)

        last_preview = time.monotonic()

        def on_preview(render: Callable[[], np.ndarray]) -> None:
            """Now and then, the work so far as a small video (`progress_video`) of the batch's first job."""
            nonlocal last_preview
            if self.config.preview_s is None or time.monotonic() - last_preview < self.config.preview_s:
                return
            if lead.id not in live:
                return
            frames = preview_frames(render())
            with tempfile.TemporaryDirectory() as tmp:
                if len(frames) == 1:
                    path = media.write_image(Path(tmp) / "progress.jpg", frames[0])
                else:
                    path = media.write_video(Path(tmp) / "progress.mp4", frames, int(lead.task.get("fps") or 8))
                key = self.assets.put(asset_key(lead.tenant, lead.id, path.name), path.read_bytes())
            last_preview = time.monotonic()
            if not self.store.heartbeat(lead.id, name, lease_s, preview=key):
                gone(lead)

        try:
            # 2. pixels: one call for the batch
            backend = self.backend(lead.model, lead.task.get("parallel"))  # a batch shares one key: one split
            if not settle():
                return  # every job was lost while the model loaded; it stays loaded for the next
            tasks = [task for job, task in zip(ran, tasks, strict=True) if job.id in live]  # the lost: not run
            ran = [job for job in ran if job.id in live]
            lead = ran[0]
            results = backend.generate(tasks, on_progress, on_preview)
        except Cancelled:
            return  # every job of the batch is gone, each failed "Deleted" as it went
        except AttemptFailed as err:  # not the requests' fault (a rank died): each goes back to the queue, retried
            leases.stop()  # a beat after the release could hold the job back from the queue
            settle()
            log.warning("generation(s) %s go back to the queue: %s", ", ".join(live), err)
            for job in list(live.values()):
                self.store.release(job.id, name)
            return
        except Exception as err:  # a failed job is never dropped: each ends failed with the reason
            leases.stop()
            settle()
            log.exception("generation(s) %s failed", ", ".join(live))
            for job in list(live.values()):
                self._fail(job, err)
            return
        # 3. files, then each record
        for job, result in zip(ran, results, strict=True):
            if job.id not in live or job.id in leases.lost():
                continue  # deleted while it ran: failed already, its result is dropped
            try:
                self._complete(job, result, reads)
            except Exception as err:
                log.exception("generation %s failed", job.id)
                self._fail(job, err)
            leases.drop(job.id)

    def _complete(self, job: Job, result: Media, reads: Files) -> None:
        # 0. the output's moderation (the deployment's frame checkers; none configured: allowed): a refusal fails
        # the job with its reason, which refunds it, and nothing is stored
        decision = moderation.screen_frames(result.frames, job.tenant)
        if not decision.allowed:
            self.store.fail(job.id, self.config.name, decision.reason)
            # its previews (drawn from the refused frames) go too, where this worker's store can delete them
            forget = getattr(self.assets, "delete_generation", None)
            if forget is not None:
                forget(job.tenant, job.id)
            return
        # 1. the watermark in the pixels, 2. the files, 3. each signed with the generation's manifest, 4. stored
        frames, marked = self.provenance.mark(result.frames, job.id)
        image_format = str(job.request.get("format") or "png") if job.generation_type == "image" else "png"
        files = encode(replace(result, frames=frames), image_format)
        manifest = Manifest(
            model=job.model,
            model_version=model_version(job.model),
            action=ACTIONS.get(job.task.get("kind") or "", "created"),
            generation_id=job.id,
            region=self.config.region,
            ingredients=ingredients(job.task, reads),
            marked=marked,
            concepts=tuple(job.task.get("concepts") or ()),
        )
        self._store(job, files, manifest, result.is_image)

    def _store(self, job: Job, files: dict[str, bytes], manifest: Manifest, is_image: bool) -> None:
        """Each file signed with the generation's manifest, stored, and the job completed with them."""
        keys = {}
        for filename, data in self.provenance.sign_files(files, manifest).items():
            keys[filename] = self.assets.put(asset_key(job.tenant, job.id, filename), data)
        main = next(k for f, k in keys.items() if not f.startswith("thumbnail"))
        assets = {
            "video": None if is_image else main,
            "image": main if is_image else keys["thumbnail.jpg"],
        }
        if not self.store.complete(job.id, self.config.name, assets):
            log.warning("generation %s was taken from %s before it finished; result dropped", job.id, self.config.name)

    def _fail(self, job: Job, err: Exception) -> None:
        self.store.fail(job.id, self.config.name, f"Job failed: {type(err).__name__}: {err}")
