"""The plan reports as HTML: every Markdown table becomes a table of its data rows (the `|---|---|` row under
the header is no row of data), and chart axes read 10M, not a "1e7" in the corner."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from noor.plan.html import markdown_to_html, readable

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"
SEPARATOR = re.compile(r"[-:| ]*-{2,}[-:| ]*")  # ---, :---:, ---|---: what a separator row's cells look like


class Tables(HTMLParser):
    """Each <table>'s rows, each row's cell texts (th and td)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def markdown_tables(md: str) -> list[list[str]]:
    """Each pipe table's lines, header and separator included."""
    tables: list[list[str]] = []
    previous = ""
    for line in md.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    return tables


def test_a_separator_row_is_not_data_in_any_of_its_forms() -> None:
    md = "| class | share |\n|---|---|\n| video | - |\n\n| a | b |\n| :--- | ---: |\n| 1 | 2 |\n"
    tables = Tables(markdown_to_html(md)).tables
    assert tables == [[["class", "share"], ["video", "-"]], [["a", "b"], ["1", "2"]]]  # "-" (no value) is kept


@pytest.mark.parametrize(
    "args",
    [
        ["site", "--power-mw", "150", "--chip", "b200"],
        ["growth", str(EXAMPLES / "growth.toml")],
    ],
    ids=["site", "growth"],
)
def test_report_tables_are_the_markdowns_data_rows_and_axes_are_readable(
    noor_plan: Callable[..., object], tmp_path: Path, args: list[str]
) -> None:
    md_path, html_path = tmp_path / "plan.md", tmp_path / "plan.html"
    run = noor_plan(*args, "--markdown", str(md_path), "--html", str(html_path))
    assert run.code == 0, run.stderr  # type: ignore[attr-defined]
    page = html_path.read_text()
    tables = Tables(page).tables
    assert tables, "the report has no tables"
    cells = [cell for table in tables for row in table for cell in row]
    assert [c for c in cells if SEPARATOR.fullmatch(c)] == []
    # one HTML table per Markdown table, with its header and every data row: all but the separator line
    md_tables = markdown_tables(md_path.read_text())
    assert [len(t) for t in tables] == [len(t) - 1 for t in md_tables]
    # matplotlib writes each label's text as an SVG comment next to its glyphs: no "1e7"-style offsets
    labels = re.findall(r"<!-- (.*?) -->", page)
    assert labels and not [label for label in labels if re.fullmatch(r"[-+]?\d(\.\d+)?e[-+]?\d+", label)]
    if args[0] == "site":
        assert "10M" in labels  # requests/day by class: millions, as 2M, 4M ... 10M


def test_readable_tick_labels() -> None:
    assert [readable(x) for x in (0, 0.5, 750, 2_500, 1e7, 12_500_000, 2e9, -3e6)] == [
        "0", "0.5", "750", "2.5k", "10M", "12.5M", "2B", "-3M"
    ]  # fmt: skip
