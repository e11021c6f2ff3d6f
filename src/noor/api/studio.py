"""The studio: its page at `/`, its files at `/studio/`, and the few JSON routes it needs that the API lacks.

- GET  /v1/studio/options      what the create form offers (model names, sizes, durations, concepts)
- POST /v1/studio/quote        a video request's ETA and price before it is submitted (nothing is stored)
- GET  /v1/studio/generations  the gallery: the tenant's generations filtered by state and prompt text, paged
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from noor import catalog
from noor.api.app import Ctx, Tenant, generation_out, keyframes_for
from noor.api.errors import Error, responses
from noor.api.pricing import quote
from noor.api.requests import DURATIONS_S, resolve_video
from noor.api.schemas import GenerationList, VideoCreate
from noor.engine import concepts as registered_concepts
from noor.engine import registry
from noor.engine.task import ASPECT_RATIOS, RESOLUTIONS
from noor.jobs.generation import Generation, now_utc
from noor.studio import STUDIO_DIR

# The gallery filter reads the newest generations in batches; past this many it stops and says so
# (`scanned_all` false). A tenant with more narrows the search or pages the plain API.
MAX_SCAN = 5000
SCAN_BATCH = 500

# Same-origin only: assets are this server's signed /assets links. Inline styles are allowed for the
# planner's matplotlib SVG charts (they carry style attributes); scripts are never inline.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

router = APIRouter(responses=responses(Error, 401))


class ModelOption(BaseModel):
    name: str  # what a request's `model` says
    model: str  # the Noor model it runs
    capabilities: list[str]
    description: str


class ChipOption(BaseModel):
    id: str
    name: str


class ConceptOption(BaseModel):
    key: str
    model: str  # the Noor model id it acts on
    description: str
    words: dict[str, list[str]]  # language -> the words it teaches (may be empty)


class Options(BaseModel):
    models: list[ModelOption]
    default_model: str
    aspect_ratios: list[str]
    resolutions: list[str]
    durations: list[str]
    concepts: list[str]  # the installed concept keys (noor concepts add) whose model is available
    concept_models: dict[str, list[str]]  # concept key -> the model it acts on
    concept_details: list[ConceptOption]  # what the picker shows of each
    chips: list[ChipOption]  # catalog chips, for the planner page


class Quote(BaseModel):
    model: str
    eta_s: float | None  # predicted seconds of work on one of this deployment's workers; None: not in the catalog
    done_in_s: float | None = None  # when it would be done if queued now: the queue ahead, then its run (learnt)
    price_cents: float
    width: int
    height: int
    num_frames: int
    fps: int


class StudioPage(GenerationList):
    total: int  # matching generations among those scanned
    scanned_all: bool  # false when the tenant has more than MAX_SCAN generations and only the newest were read


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
    return FileResponse(STUDIO_DIR / "index.html", headers=headers)


@router.get("/v1/studio/options", response_model=Options, tags=["studio"])
def options(tenant: Tenant, ctx: Ctx) -> Options:
    specs = {s.id: s for s in registry.available()}
    trained = [c for c in registered_concepts.installed().values() if c.model in specs]
    installed_concepts = {c.key: [c.model] for c in trained}
    names = {alias: target for alias, target in ctx.config.aliases.items() if target in specs}
    names |= {model_id: model_id for model_id in specs}
    models = [
        ModelOption(
            name=name,
            model=target,
            capabilities=sorted(specs[target].capabilities),
            description=specs[target].description,
        )
        for name, target in sorted(names.items())
    ]
    return Options(
        models=models,
        default_model="ray-2" if "ray-2" in names else models[0].name,
        aspect_ratios=list(ASPECT_RATIOS),
        resolutions=list(RESOLUTIONS),
        durations=list(DURATIONS_S),
        concepts=list(installed_concepts),
        concept_models=installed_concepts,
        concept_details=[
            ConceptOption(key=c.key, model=c.model, description=c.description, words=c.words) for c in trained
        ],
        chips=[ChipOption(id=c.id, name=c.name) for c in catalog.chips().values()],
    )


@router.post("/v1/studio/quote", response_model=Quote, tags=["studio"], responses=responses(Error, 400, 404, 413))
def quote_video(body: VideoCreate, request: Request, tenant: Tenant, ctx: Ctx) -> Quote:
    """What POST /generations/video would check, predict and charge for this body, without queuing it."""
    resolved = resolve_video(body, keyframes_for(request, ctx, tenant), ctx.config.aliases)
    q = quote(resolved.model, resolved.task, ctx.config.chip, ctx.config.markup)
    task = resolved.task
    now = now_utc()
    behind_the_queue = Generation(model=resolved.model, eta_s=q.eta_s, state="queued", created_at=now, progress=0.0)
    return Quote(
        model=resolved.model,
        eta_s=q.eta_s,
        done_in_s=None if q.eta_s is None else round(ctx.store.timing(behind_the_queue, now).left_s, 3),
        price_cents=q.price_cents,
        width=task["width"],
        height=task["height"],
        num_frames=task["num_frames"],
        fps=task["fps"],
    )


@router.get("/v1/studio/generations", response_model=StudioPage, tags=["studio"])
def gallery(
    request: Request,
    tenant: Tenant,
    ctx: Ctx,
    state: Literal["queued", "dreaming", "completed", "failed"] | None = None,
    q: str | None = Query(None, max_length=200, description="text the prompt contains (case-insensitive)"),
    limit: int = Query(12, ge=1, le=100),
    offset: int = Query(0, ge=0, le=MAX_SCAN),
) -> StudioPage:
    needle = (q or "").strip().casefold()
    matches: list[Any] = []
    scanned, total = 0, 0
    while scanned < MAX_SCAN:
        rows, total = ctx.store.list(tenant.name, SCAN_BATCH, scanned)
        scanned += len(rows)
        for g in rows:
            if state is not None and g.state != state:
                continue
            if needle and needle not in str(g.request.get("prompt") or "").casefold():
                continue
            matches.append(g)
        if len(rows) < SCAN_BATCH:
            break
    page = [generation_out(request, ctx, g) for g in matches[offset : offset + limit]]
    return StudioPage(
        generations=page,
        count=len(page),
        has_more=offset + len(page) < len(matches),
        limit=limit,
        offset=offset,
        total=len(matches),
        scanned_all=scanned >= total,
    )


def install(app: FastAPI) -> None:
    """The studio's routes, and its static files under /studio (never at `/`, so no API path is shadowed)."""
    app.include_router(router)
    app.mount("/studio", StaticFiles(directory=STUDIO_DIR), name="studio")
