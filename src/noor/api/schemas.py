"""Request and response bodies of the Dream Machine API (docs/reference/luma-api.md §3–4)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AspectRatio = Literal["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"]


class ImageKeyframe(BaseModel):
    type: Literal["image"]
    url: str = Field(max_length=4096)


class GenerationKeyframe(BaseModel):
    type: Literal["generation"]
    id: str = Field(max_length=64)


Keyframe = Annotated[ImageKeyframe | GenerationKeyframe, Field(discriminator="type")]


class Keyframes(BaseModel):
    frame0: Keyframe | None = None
    frame1: Keyframe | None = None


class Concept(BaseModel):
    key: str = Field(max_length=64)


class VideoCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field("ray-2", max_length=64)
    prompt: str | None = Field(None, max_length=20000)
    negative_prompt: str | None = Field(None, max_length=20000)  # Noor's addition: what not to see
    aspect_ratio: AspectRatio = "16:9"
    loop: bool = False
    keyframes: Keyframes | None = None
    resolution: str | None = Field(None, max_length=16)
    duration: str | None = Field(None, max_length=16)
    concepts: list[Concept] | None = Field(None, max_length=8)
    callback_url: str | None = Field(None, max_length=4096)
    generation_type: Literal["video"] = "video"


class ImageCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field("photon-1", max_length=64)
    prompt: str | None = Field(None, max_length=20000)
    aspect_ratio: AspectRatio = "16:9"
    format: Literal["jpg", "png"] = "jpg"
    callback_url: str | None = Field(None, max_length=4096)
    generation_type: Literal["image"] = "image"
    # answered with the finished image, waiting up to sync_timeout seconds (the SDK's read timeout is 60 s)
    sync: bool = False
    sync_timeout: float = Field(60.0, gt=0, le=60)
    # image conditioning: no installed model takes it yet, so a request that sends it is refused, not run without
    image_ref: list[Any] | None = None
    style_ref: list[Any] | None = None
    character_ref: dict[str, Any] | None = None
    modify_image_ref: dict[str, Any] | None = None


class Upscale(BaseModel):
    model_config = ConfigDict(extra="ignore")

    resolution: str = Field("1080p", max_length=16)
    callback_url: str | None = Field(None, max_length=4096)
    generation_type: Literal["upscale_video"] = "upscale_video"


class AddAudio(BaseModel):
    """`POST /generations/{id}/audio`: sound for a completed video, made by an installed audio model."""

    model_config = ConfigDict(extra="ignore")

    prompt: str | None = Field(None, max_length=5000)
    negative_prompt: str | None = Field(None, max_length=5000)
    callback_url: str | None = Field(None, max_length=4096)
    generation_type: Literal["add_audio"] = "add_audio"


class MediaRef(BaseModel):
    url: str = Field(max_length=4096)


class ModifyVideo(BaseModel):
    """§3.5: an edit of a video under a new prompt (`mode` checked against the engine's levels, with a 400)."""

    model_config = ConfigDict(extra="ignore")

    generation_type: Literal["modify_video"] = "modify_video"
    media: MediaRef
    mode: str = Field(max_length=32)
    model: str = Field("ray-2", max_length=64)
    first_frame: MediaRef | None = None  # refused: the edit takes its frames from the source
    prompt: str | None = Field(None, max_length=20000)
    callback_url: str | None = Field(None, max_length=4096)


class Reframe(BaseModel):
    """§3.6-3.7's shared fields: the source placed on a canvas of `aspect_ratio`, the rest drawn."""

    model_config = ConfigDict(extra="ignore")

    media: MediaRef
    aspect_ratio: AspectRatio
    prompt: str | None = Field(None, max_length=20000)
    grid_position_x: int | None = None  # the source's top-left corner, in the docs' canvas pixels
    grid_position_y: int | None = None
    resized_width: int | None = None  # the source's size on the canvas, in the same pixels
    resized_height: int | None = None
    x_start: int | None = None  # crop bounds: refused (docs/api.md says why)
    x_end: int | None = None
    y_start: int | None = None
    y_end: int | None = None
    callback_url: str | None = Field(None, max_length=4096)


class ReframeVideo(Reframe):
    generation_type: Literal["reframe_video"] = "reframe_video"
    model: str = Field("ray-2", max_length=64)
    first_frame: MediaRef | None = None  # refused, as for ModifyVideo


class ReframeImage(Reframe):
    generation_type: Literal["reframe_image"] = "reframe_image"
    model: str = Field("photon-1", max_length=64)
    format: Literal["jpg", "png"] = "jpg"


class Assets(BaseModel):
    video: str | None = None
    image: str | None = None
    progress_video: str | None = None


class GenerationOut(BaseModel):
    id: str
    generation_type: Literal["video", "image"]
    state: Literal["queued", "dreaming", "completed", "failed"]
    failure_reason: str | None
    created_at: datetime
    assets: Assets | None
    model: str
    request: dict[str, Any]
    # Noor's additions (the SDKs ignore fields they do not know)
    eta_s: float | None = None  # predicted seconds of work on the catalog chip (noor.perf): what the price is of
    # when it will be done, as the queue stands now (noor.jobs.eta): seconds until it starts, its run time on this
    # deployment's workers (learnt from the model's last runs; what it took, once done), and until it is done
    wait_s: float | None = None
    run_s: float | None = None
    done_in_s: float | None = None
    price_cents: float = 0.0  # taken from the credits at create time; refunded if the job fails
    region: str | None = None  # where its data lives: its tenant's region's data plane (None: the central store)
    progress: float = 0.0  # share of the work done, 0..1
    # what the model adapts or cannot do for this request (another aspect filled, words it does not know)
    warnings: list[str] = Field(default_factory=list)


class GenerationList(BaseModel):
    generations: list[GenerationOut]
    count: int
    has_more: bool
    limit: int
    offset: int


class Credits(BaseModel):
    credit_balance: float  # cents, exact to the micro-cent (noor.jobs.money)
    metered: bool = True  # Noor's addition: False for a tenant that is never charged (credit_balance unused)


class Ping(BaseModel):
    message: str = "pong"
