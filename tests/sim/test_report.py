from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from noor import sim
from noor.sim.report import html_report

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sim"


def test_html_report_has_the_plots_and_the_numbers() -> None:
    s = sim.load(EXAMPLES / "three-regions.toml").model_copy(update={"horizon_h": 4.0})
    result = sim.run(s, keep=True)
    page = html_report(result)
    assert page.count("<svg") == 4  # queue length, utilisation, CDF per class, CDF per region
    for title in ("Queue length over the day", "Utilisation over the day", "Latency CDF per class",
                  "Latency CDF per region"):
        assert title in page
    assert "<script" not in page and not re.search(r"(src|href)=.https?:", page)  # opens offline
    assert not re.search(r"<t[dh]>[-:| ]*-{2,}[-:| ]*</t[dh]>", page)  # no Markdown separator row as data
    for c in result["classes"]:
        assert f"<td>{c['name']}</td><td>{c['jobs']:,}</td>" in page
    f = result["fleet"]
    assert f"{f['videos_per_hour']:,.0f} videos/hour, {f['images_per_hour']:,.0f} images/hour" in page
    images = sum(c["jobs"] for c in result["classes"] if c["name"] == "image-1k")  # not videos (issue #26)
    assert f["videos_per_hour"] * 4.0 < sum(c["jobs"] for c in result["classes"]) - 0.9 * images
    assert "ksa-sovereign" in page and "me-riyadh-1" in page and "mi300x" in page
    assert re.search(r"busy GPU at TDP", page)


def test_cli_writes_the_report_and_analytic_report_has_no_cdf(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    run = subprocess.run([sys.executable, "-m", "noor.cli", "simulate", "run", str(EXAMPLES / "three-regions.toml"),
                          "--analytic", "--html", str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    assert page.count("<svg") == 2 and "Mode: <b>analytic</b>" in page
