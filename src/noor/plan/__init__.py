"""Plan the compute: megawatts -> chips, racks, videos per day and dollars, with every assumption sourced.

from noor import plan
a = plan.assumptions.resolve({"pue.liquid": 1.15})
site = plan.plan_site(150, "b200", plan.mix.load(), a, cooling="liquid")
site.videos_per_day, site.per_item(video=True)   # (kWh, USD) per video
"""

from noor.plan import assumptions, mix
from noor.plan.errors import PlanError
from noor.plan.site import SitePlan, plan_site

__all__ = ["PlanError", "SitePlan", "assumptions", "mix", "plan_site"]
