"""The planner over HTTP, for the studio's planner page: POST /v1/plan/site and /v1/plan/chips.

Same inputs as `noor plan site` / `noor plan chips` as JSON; the answer is exactly the CLI's `--json`
document. Bad input is 422 with {"detail": "field: message, got value"}.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from noor.api.app import Tenant
from noor.plan import PlanError, inputs
from noor.plan.chips import rank_chips
from noor.plan.report import jsonable
from noor.plan.site import plan_site

router = APIRouter(prefix="/v1/plan", tags=["plan"])


class Overrides(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cooling: str = Field("liquid", description="air or liquid")
    pue: float | None = Field(None, description="facility W per IT W (default: by cooling, from the assumptions)")
    power_price: float | None = Field(None, description="USD per kWh")
    life_years: float | None = Field(None, description="accelerator depreciation, years")
    utilisation: float | None = Field(None, description="max busy fraction of each pool, (0, 1]")
    set: dict[str, float] = Field(default_factory=dict, description="any assumption key -> value")
    mix: dict[str, Any] | None = Field(None, description='{"classes": [{model, width, height, frames, share, ...}]}')

    def options(self) -> inputs.Options:
        return inputs.Options(pue=self.pue, power_price=self.power_price, life_years=self.life_years,
                              utilisation=self.utilisation, set=dict(self.set), mix=self.mix)


class SiteIn(Overrides):
    power_mw: float = Field(description="facility power, MW")
    chip: str = Field(description="chip id from the catalog, e.g. b200")


class ChipsIn(Overrides):
    power_mw: float = Field(description="facility power, MW")
    chips: list[str] | None = Field(None, description="chip ids to compare (default: every catalog chip)")
    sort_by: str = Field("videos_per_mw", description="videos_per_mw, usd_per_video or time_to_video")


@router.post("/site")
def site(body: SiteIn, tenant: Tenant) -> dict[str, Any]:
    try:
        mix, a = inputs.resolve(body.options())
        return jsonable(plan_site(body.power_mw, body.chip, mix, a, body.cooling).to_dict())
    except PlanError as err:
        raise HTTPException(422, str(err)) from err


@router.post("/chips")
def chips(body: ChipsIn, tenant: Tenant) -> dict[str, Any]:
    try:
        mix, a = inputs.resolve(body.options())
        return jsonable(rank_chips(body.power_mw, mix, a, body.cooling, body.chips, body.sort_by).to_dict())
    except PlanError as err:
        raise HTTPException(422, str(err)) from err
