"""The worker API: how `noor worker --server URL --key KEY` claims jobs and reports back over HTTP.

Only worker keys (`noor keys create --worker`) may call it; tenant keys get 401 here and worker keys get
401 on the tenant API. A worker may touch a job's files and state only while it holds the job's lease.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from noor.jobs import tenants
from noor.jobs.assets import AssetNotFound, asset_key
from noor.jobs.generation import Generation

router = APIRouter(prefix="/v1/worker", include_in_schema=False)

_FILENAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_BATCH = 64  # the most jobs one claim may take


def current_worker(request: Request) -> None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    ok = scheme.lower() == "bearer" and tenants.authenticate(request.app.state.ctx.store, key.strip(), "worker")
    if not ok:
        raise HTTPException(401, "a worker key is required (noor keys create --worker)")


WorkerAuth = Depends(current_worker)


class ClaimIn(BaseModel):
    worker: str = Field(min_length=1, max_length=128)
    lease_s: float = Field(30.0, gt=0, le=3600)
    models: list[str] = Field(min_length=1)
    region: str | None = None
    # up to this many jobs of one batch key, answered as {"jobs": [...]}; absent: one job, as before batching
    max_batch: int | None = Field(None, ge=1, le=MAX_BATCH)


class HeartbeatIn(BaseModel):
    worker: str = Field(min_length=1, max_length=128)
    lease_s: float = Field(30.0, gt=0, le=3600)
    progress: float | None = Field(None, ge=0, le=1)
    preview: str | None = None


class FinishIn(BaseModel):
    worker: str = Field(min_length=1, max_length=128)
    assets: dict[str, str | None] | None = None
    reason: str | None = Field(None, max_length=4000)


def job_json(g: Generation) -> dict[str, Any]:
    return {
        "id": g.id,
        "tenant": g.tenant,
        "model": g.model,
        "task": g.task,
        "request": g.request,
        "generation_type": g.generation_type,
    }


def _leased(request: Request, generation_id: str, worker: str) -> Generation:
    job = request.app.state.ctx.store.leased(generation_id, worker)
    if job is None:
        raise HTTPException(409, f"generation {generation_id} is not leased to worker {worker!r}")
    leased: Generation = job
    return leased


@router.get("/ping", dependencies=[WorkerAuth])
def ping() -> dict[str, bool]:
    """For a worker to check the server and its key before it loads a model."""
    return {"ok": True}


@router.post("/claim", dependencies=[WorkerAuth])
def claim(body: ClaimIn, request: Request) -> Response:
    regions = [body.region] if body.region else None
    store = request.app.state.ctx.store
    jobs = store.claim_batch(body.worker, body.lease_s, body.models, regions, max_batch=body.max_batch or 1)
    if not jobs:
        return Response(status_code=204)
    if body.max_batch is None:  # a worker from before batching reads one job, of these fields only
        return JSONResponse(job_json(jobs[0]))
    return JSONResponse({"jobs": [job_json(job) | {"batch_key": job.batch_key} for job in jobs]})


@router.post("/jobs/{generation_id}/heartbeat", dependencies=[WorkerAuth])
def heartbeat(generation_id: str, body: HeartbeatIn, request: Request) -> dict[str, bool]:
    store = request.app.state.ctx.store
    if body.preview is not None:
        job = _leased(request, generation_id, body.worker)
        if not body.preview.startswith(f"{job.tenant}/{job.id}/"):
            raise HTTPException(400, f"preview must be one of this job's files, got {body.preview!r}")
    ok = store.heartbeat(generation_id, body.worker, body.lease_s, progress=body.progress, preview=body.preview)
    return {"ok": bool(ok)}


@router.put("/jobs/{generation_id}/files/{filename}", dependencies=[WorkerAuth])
async def put_file(
    generation_id: str, filename: Annotated[str, Path(pattern=_FILENAME)], worker: str, request: Request
) -> dict[str, str]:
    job = _leased(request, generation_id, worker)
    data = await request.body()  # at most WORKER_FILE_BYTES: the request gate counts it as it streams
    key = request.app.state.ctx.assets.put(asset_key(job.tenant, job.id, filename), data)
    return {"key": key}


@router.post("/jobs/{generation_id}/complete", dependencies=[WorkerAuth])
def complete(generation_id: str, body: FinishIn, request: Request) -> dict[str, bool]:
    assets = body.assets or {}
    prefix = f"{generation_id}/"
    if any(v is not None and prefix not in v for v in assets.values()):
        raise HTTPException(400, "assets must be this job's own files")
    return {"ok": bool(request.app.state.ctx.store.complete(generation_id, body.worker, assets))}


@router.post("/jobs/{generation_id}/fail", dependencies=[WorkerAuth])
def fail(generation_id: str, body: FinishIn, request: Request) -> dict[str, bool]:
    reason = body.reason or "Job failed"
    return {"ok": bool(request.app.state.ctx.store.fail(generation_id, body.worker, reason))}


@router.post("/jobs/{generation_id}/release", dependencies=[WorkerAuth])
def release(generation_id: str, body: FinishIn, request: Request) -> dict[str, bool]:
    """The worker gives the job back: its attempt failed for a reason outside the request (a rank died)."""
    return {"ok": bool(request.app.state.ctx.store.release(generation_id, body.worker))}


@router.get("/assets/{key:path}", dependencies=[WorkerAuth])
def get_asset(key: str, request: Request) -> Response:
    """Inputs of a job (keyframes, a video to upscale): workers are trusted to read any asset."""
    try:
        return Response(request.app.state.ctx.assets.get(key), media_type="application/octet-stream")
    except (AssetNotFound, ValueError) as err:
        raise HTTPException(404, "Asset not found") from err
