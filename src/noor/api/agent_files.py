"""The Agents API's files (`client.files` in `luma-agents` 0.5.0): presigned uploads a generation can reference.

Lifecycle (docs/reference/luma-agents-api.md §2.3): `POST /files` declares the file and answers a presigned PUT
(`upload.url`, signed like asset links, valid `UPLOAD_TTL_S` or until the file's own `expires_at`); the client PUTs
the bytes there without its API key (the URL is the credential), and they are decoded then: bytes that are not the
declared `mime_type` are a 400 and nothing is kept. `POST /files/{id}/complete` makes the file `ready` (the checks
an ingest would run have already run on the PUT), and `{"file_id": ...}` in a generation's ImageRef uses it.

A file is a JSON record beside its bytes in the tenant's uploads (`tenant/uploads/file_<hex>.json` and
`.../file_<hex>.png`), in the tenant's region like every upload: the job store has no table for files. Listing reads
the tenant's records (fine for the hundreds of files a tenant keeps; a table is the step after that).
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from noor.api.app import Context, Ctx, Tenant, public_base
from noor.api.errors import Error, responses
from noor.api.requests import RequestError
from noor.api.uploads import file_suffix
from noor.jobs import tenants
from noor.jobs.assets import UPLOADS, AssetNotFound, asset_key, sign, verify
from noor.jobs.generation import now_utc

PREFIX = "/agents/v1"
UPLOAD_PREFIX = f"{PREFIX}/uploads/"  # the presigned PUT target: its URL carries its own signature
UPLOAD_TTL_S = 3600  # how long a presigned PUT URL is valid (S3's presigned URLs default to an hour too)
MAX_FILE_BYTES = 64 * 1024 * 1024  # this deployment's cap (the spec allows 5 GiB; uploads stay in memory here)
MIME_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "video/mp4": ".mp4"}
LIST_LIMIT = 25
B = TypeVar("B", bound=BaseModel)

router = APIRouter(prefix=PREFIX, responses=responses(Error, 400, 401, 404))
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Error, "description": "The file is no longer pending: it takes no more bytes"}
}


class FileCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    mime_type: str = Field(max_length=100)
    size_bytes: int
    expires_at: datetime | None = None
    filename: str | None = Field(None, max_length=255)
    purpose: Literal["input", "reference"] | None = None
    user_id: str | None = Field(None, max_length=256)


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _record_key(tenant: str, file_id: str) -> str:
    return asset_key(tenant, UPLOADS, f"{file_id}.json")


def _signed_key(tenant: str, file_id: str) -> str:
    return f"agents-upload/{tenant}/{file_id}"  # what an upload URL's signature covers


def presigned(path: str) -> bool:
    """Whether `path` is a presigned upload, which the request gate lets through without an API key."""
    return path.startswith(UPLOAD_PREFIX)


def body_limit(base: Any) -> Any:
    """The request gate's cap on a body: an upload's for the presigned PUT, `base`'s elsewhere."""
    return lambda path: MAX_FILE_BYTES if presigned(path) else base(path)


def load(ctx: Context, tenant: str, file_id: str) -> dict[str, Any] | None:
    """The tenant's file record, or None (another tenant's file is None too)."""
    try:
        return dict(json.loads(ctx.assets.get(_record_key(tenant, file_id))))
    except (AssetNotFound, ValueError):  # ValueError: not a key an id of ours makes
        return None


def _save(ctx: Context, regions: list[str] | None, record: dict[str, Any]) -> None:
    ctx.assets.put_for(regions, _record_key(record["tenant"], record["id"]), json.dumps(record).encode())


def file_out(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the SDK's File (its `tenant`, `key` and `upload_expires_at` stay inside)."""
    fields = ("id", "created_at", "mime_type", "purpose", "size_bytes", "state", "deleted_at", "expires_at")
    return {k: record.get(k) for k in fields} | {k: record.get(k) for k in ("failure_reason", "filename", "user_id")}


def usable(ctx: Context, tenant: tenants.Tenant, file_id: str, field: str) -> dict[str, Any]:
    """A `ready` file of the tenant's for an ImageRef's `file_id`, or RequestError(400) naming `field` and the id.

    (A 400, not a 404: the request is what is wrong; another tenant's file reads as unknown.)"""
    record = load(ctx, tenant.name, file_id)
    if record is None:
        raise RequestError(400, f"{field}: no file {file_id!r} (upload one with POST /files)", field=field)
    if record["state"] != "ready":
        hint = " (call POST /files/{id}/complete after the upload)" if record["state"] == "pending" else ""
        raise RequestError(400, f"{field}: file {file_id!r} is {record['state']}, not ready{hint}", field=field)
    expires_at = record.get("expires_at")
    if expires_at and datetime.fromisoformat(expires_at) <= now_utc():
        raise RequestError(400, f"{field}: file {file_id!r} expired at {expires_at}", field=field)
    return record


def parse_body(model: type[B], body: bytes) -> B:
    """A JSON body as `model`, or RequestError(400) naming the first bad field and its value (the Agents API's
    one-line error, rather than FastAPI's 422 list). JSON `null` reads as absent."""
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in first["loc"]).replace(".[", "[")
        if first["type"] == "missing" or first.get("input", 0) is None:  # null reads as absent
            raise RequestError(400, f"{where} is required", field=where) from None
        if first["type"] == "json_invalid":
            raise RequestError(400, f"body is not JSON: {first['msg']}") from None
        got = _shown(first.get("input"))
        raise RequestError(400, f"{where or 'body'}: {first['msg']}, got {got}", field=where) from None


def _shown(value: Any, most: int = 200) -> str:
    """A refused value as an error line shows it: its repr, or for a long one (65 keyframes of base64 data) what it
    is and how long."""
    text = repr(value)
    if len(text) <= most:
        return text
    if isinstance(value, str):
        return f"<{len(value)} characters>"
    if isinstance(value, list | dict):
        return f"<{len(value)} items>"
    return text[:most] + "..."


@router.post("/files", status_code=201, responses=responses(Error, 413))
async def create_file(request: Request, tenant: Tenant, ctx: Ctx) -> dict[str, Any]:
    body = parse_body(FileCreate, await request.body())
    return await run_in_threadpool(_create_file, body, request, tenant, ctx)


def _create_file(body: FileCreate, request: Request, tenant: tenants.Tenant, ctx: Context) -> dict[str, Any]:
    # 1. what is declared
    if body.mime_type not in MIME_SUFFIXES:
        raise RequestError(
            400, f"mime_type must be one of {', '.join(MIME_SUFFIXES)}, got {body.mime_type!r}", field="mime_type"
        )
    if not 0 < body.size_bytes <= MAX_FILE_BYTES:
        status = 413 if body.size_bytes > MAX_FILE_BYTES else 400
        raise RequestError(
            status, f"size_bytes must be between 1 and {MAX_FILE_BYTES} on this deployment, got {body.size_bytes}",
            field="size_bytes",
        )  # fmt: skip
    now = now_utc()
    expires_at = body.expires_at.astimezone(UTC) if body.expires_at and body.expires_at.tzinfo else body.expires_at
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
        raise RequestError(
            400, f"expires_at must be a future time with a timezone, got {body.expires_at.isoformat()}",  # type: ignore[union-attr]
            field="expires_at",
        )  # fmt: skip
    # 2. the record and its presigned PUT (which ends no later than the file)
    file_id = f"file_{secrets.token_hex(16)}"
    upload_expires = now + timedelta(seconds=UPLOAD_TTL_S)
    if expires_at is not None:
        upload_expires = min(upload_expires, expires_at)
    record = {
        "id": file_id,
        "tenant": tenant.name,
        "created_at": rfc3339(now),
        "mime_type": body.mime_type,
        "purpose": body.purpose or "input",
        "size_bytes": body.size_bytes,
        "state": "pending",
        "expires_at": rfc3339(expires_at) if expires_at else None,
        "filename": body.filename,
        "user_id": body.user_id,
        "key": asset_key(tenant.name, UPLOADS, file_id + MIME_SUFFIXES[body.mime_type]),
        "uploaded": False,
    }
    _save(ctx, tenant.regions, record)
    expires_s = int(upload_expires.timestamp())
    signature = sign(ctx.config.secret, _signed_key(tenant.name, file_id), expires_s)
    url = f"{public_base(request, ctx)}{UPLOAD_PREFIX}{tenant.name}/{file_id}?expires={expires_s}&sig={signature}"
    return {
        "id": file_id,
        "state": "pending",
        "file": file_out(record),
        "upload": {
            "method": "PUT",
            "url": url,
            "headers": {"Content-Type": body.mime_type},
            "expires_at": rfc3339(datetime.fromtimestamp(expires_s, UTC)),
        },
    }


@router.put("/uploads/{tenant_name}/{file_id}", status_code=200, responses=responses(Error, 403, 413) | CONFLICT)
async def put_bytes(
    tenant_name: str, file_id: str, request: Request, ctx: Ctx, expires: int = 0, sig: str = ""
) -> Response:
    """The presigned PUT: its signature and expiry are checked before the body is read."""
    # 1. the URL's signature (now=0: its expiry is checked next, with its own reason)
    signed = _signed_key(tenant_name, file_id)
    if not sig or not verify(ctx.config.secret, signed, expires, sig, now=0):
        raise HTTPException(403, "upload URL signature does not match: use the upload.url POST /files answered")
    if expires <= time.time():
        raise HTTPException(
            403, f"upload URL expired at {rfc3339(datetime.fromtimestamp(expires, UTC))}: create the file again"
        )
    # 2. the bytes
    data = await request.body()
    await run_in_threadpool(_take_bytes, ctx, tenant_name, file_id, data)
    return Response(status_code=200)


def _take_bytes(ctx: Context, tenant_name: str, file_id: str, data: bytes) -> None:
    """A pending file's bytes: as many as declared, of the declared type (decoded here), else a 4xx."""
    record = load(ctx, tenant_name, file_id)
    if record is None or record["state"] != "pending":
        state = "deleted" if record is None else record["state"]
        raise HTTPException(409 if record else 404, f"file {file_id!r} is {state}; it takes bytes only while pending")
    if len(data) != record["size_bytes"]:
        raise HTTPException(400, f"file {file_id!r} was declared {record['size_bytes']} bytes, got {len(data)}")
    try:
        suffix = file_suffix(data, f"file {file_id!r}")
    except RequestError as err:
        raise HTTPException(400, f"{err.detail} (declared {record['mime_type']})") from err
    if suffix != MIME_SUFFIXES[record["mime_type"]]:
        found = next(m for m, s in MIME_SUFFIXES.items() if s == suffix)
        raise HTTPException(400, f"file {file_id!r} was declared {record['mime_type']}, but its bytes are {found}")
    regions = tenants.get_tenant(ctx.store, tenant_name).regions
    ctx.assets.put_for(regions, record["key"], data)
    _save(ctx, regions, record | {"uploaded": True})


def _owned(ctx: Context, tenant: tenants.Tenant, file_id: str) -> dict[str, Any]:
    record = load(ctx, tenant.name, file_id)
    if record is None:
        raise RequestError(404, f"file_id: no file {file_id!r}", field="file_id")
    return record


@router.post("/files/{file_id}/complete")
def complete_file(file_id: str, tenant: Tenant, ctx: Ctx) -> dict[str, Any]:
    record = _owned(ctx, tenant, file_id)
    if record["state"] == "pending":
        if not record.get("uploaded"):
            raise RequestError(400, f"file {file_id!r} has no bytes yet: PUT them to its upload.url first")
        record = record | {"state": "ready"}  # the PUT decoded them (what an ingest would check)
        _save(ctx, tenant.regions, record)
    elif record["state"] == "deleted":
        raise RequestError(400, f"file {file_id!r} is deleted")
    return file_out(record)


@router.get("/files/{file_id}")
def get_file(file_id: str, tenant: Tenant, ctx: Ctx) -> dict[str, Any]:
    return file_out(_owned(ctx, tenant, file_id))


@router.get("/files")
def list_files(
    tenant: Tenant,
    ctx: Ctx,
    cursor: str | None = None,
    limit: Annotated[str | None, Query()] = None,
    purpose: str | None = None,
    state: str | None = None,
) -> dict[str, Any]:
    """Newest first; `next_cursor` is the last file's id (keyset: the page after it)."""
    if limit is not None and not (limit.isdigit() and 1 <= int(limit) <= 100):
        raise RequestError(400, f"limit must be between 1 and 100, got {limit!r}", field="limit")
    if purpose not in (None, "input", "reference"):
        raise RequestError(400, f"purpose must be input or reference, got {purpose!r}", field="purpose")
    if state not in (None, "pending", "ready", "failed", "deleted"):
        raise RequestError(400, f"state must be pending, ready, failed or deleted, got {state!r}", field="state")
    count = int(limit) if limit else LIST_LIMIT
    records = []
    for key in ctx.assets.keys(f"{tenant.name}/{UPLOADS}"):
        name = key.rsplit("/", 1)[-1]
        if name.startswith("file_") and name.endswith(".json"):
            record = load(ctx, tenant.name, name.removesuffix(".json"))
            if (
                record
                and (purpose is None or record["purpose"] == purpose)
                and (state is None or record["state"] == state)
            ):
                records.append(record)
    records.sort(key=lambda r: (datetime.fromisoformat(r["created_at"]), r["id"]), reverse=True)
    if cursor is not None:
        after = next((i for i, r in enumerate(records) if r["id"] == cursor), None)
        if after is None:
            raise RequestError(400, f"cursor: no file {cursor!r} in this listing", field="cursor")
        records = records[after + 1 :]
    page = records[:count]
    more = len(records) > count
    return {"data": [file_out(r) for r in page], "has_more": more, "next_cursor": page[-1]["id"] if more else None}


@router.delete("/files/{file_id}", status_code=204)
def delete_file(file_id: str, tenant: Tenant, ctx: Ctx) -> Response:
    """Soft: the record stays `deleted` with `deleted_at`; the bytes go."""
    record = _owned(ctx, tenant, file_id)
    if record["state"] != "deleted":
        ctx.assets.delete_prefix(record["key"])  # a no-op where no bytes were put
        _save(ctx, tenant.regions, record | {"state": "deleted", "deleted_at": rfc3339(now_utc())})
    return Response(status_code=204)
