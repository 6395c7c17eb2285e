"""The report page in a real headless browser: Chromium driven by Playwright.

It loads with no console error and no request beyond the file itself, every chart draws
its data (coloured pixels on each canvas), every image decodes, hovering a chart shows its
values, and the tables hold the numbers of the run's files.

Needs ``pip install playwright`` and a Chromium binary (Debian: ``apt-get install chromium``;
another path with ``MMDPO_CHROMIUM``); Playwright's own browser download is not used. Skips
with the reason when either is missing. ``MMDPO_REPORT_SCREENSHOTS=DIR`` saves full-page
screenshots there.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mmdpo.metrics_log import read_metrics
from mmdpo.report import write_report

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Every canvas: its size and how many pixels carry colour (the palette's hues; the axes and
# grid are grey), so an empty chart or one with only axes fails.
CANVAS_PIXELS = """() => Array.from(document.querySelectorAll("canvas")).map((canvas) => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0, colour = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] === 0) continue;
    ink += 1;
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (Math.max(r, g, b) - Math.min(r, g, b) > 60) colour += 1;
  }
  const title = canvas.getAttribute("aria-label");
  return {title, width: canvas.width, height: canvas.height, ink, colour};
})"""

IMAGES = """() => Array.from(document.images).map((image) => ({
  alt: image.alt, complete: image.complete, width: image.naturalWidth, height: image.naturalHeight,
}))"""


def chromium_binary() -> str | None:
    for candidate in (
        os.environ.get("MMDPO_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A Chromium context with a fresh profile (--user-data-dir), headless."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install chromium, or set MMDPO_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=binary,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


class Page:
    """A report opened in the browser, with what it logged and requested."""

    def __init__(self, context, html: Path):
        self.page = context.new_page()
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(html.as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=20_000)

    def _console(self, message) -> None:
        if message.type in ("error", "warning", "assert"):
            self.problems.append(f"console {message.type}: {message.text}")

    def values(self, selector: str, attribute: str = "data-value") -> list[float]:
        return [float(v) for v in self.page.eval_on_selector_all(
            selector, f"cells => cells.map((c) => c.getAttribute('{attribute}'))"
        )]  # fmt: skip

    def check_renders(self, html: Path, screenshot_name: str) -> None:
        assert self.problems == []
        assert all(url == html.as_uri() or url.startswith("data:") for url in self.requests), (
            self.requests
        )
        canvases = self.page.evaluate(CANVAS_PIXELS)
        assert len(canvases) == int(self.page.evaluate("document.body.dataset.charts")) > 0
        for canvas in canvases:
            assert canvas["width"] > 0 and canvas["height"] > 0, canvas
            assert canvas["colour"] > 30, f"chart drew no data: {canvas}"
        for image in self.page.evaluate(IMAGES):
            assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
        folder = os.environ.get("MMDPO_REPORT_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(folder) / screenshot_name), full_page=True)


def test_single_run_page(browser, report_run, tmp_path):
    html = write_report([report_run], tmp_path / "run.html")
    page = Page(browser, html)
    page.check_renders(html, "report-single-run.png")

    records = read_metrics(report_run / "metrics.jsonl")
    evals = [r for r in records if "eval/loss" in r]
    for key in ("eval/rewards/accuracies", "eval/rewards/margins", "eval/loss"):
        row = f'[data-table="held-out"] tr[data-key="{key}"]'
        assert page.values(f'{row} td[data-which="first"]') == [evals[0][key]]
        assert page.values(f'{row} td[data-which="last"]') == [evals[-1][key]]
    assert page.page.inner_text('[data-kpi="steps"] .value') == str(records[-1]["step"])

    summary = json.loads((report_run / "data_summary.json").read_text())
    assert page.values('[data-table="data-0"] td[data-key="pairs"]') == [12, 4]
    assert page.values('[data-table="data-0"] td[data-key="chosen-mean"]') == [
        summary["splits"][split]["groups"][0]["raw_scores"]["chosen"]["mean"]
        for split in ("train", "eval")
    ]
    assert page.values('[data-table="checkpoints"] td.num') == [4, 9]  # step, files

    samples = [json.loads(line) for line in (report_run / "samples.jsonl").read_text().splitlines()]
    cards = page.page.eval_on_selector_all(
        "[data-sample]",
        "cards => cards.map((c) => [c.dataset.sample, "
        "c.querySelector('.answer.policy .text').textContent])",
    )
    assert cards == [[s["id"], s["policy"] or "(empty)"] for s in samples]

    canvas = page.page.locator("canvas").first
    canvas.hover(position={"x": 150, "y": 100})
    tooltip = page.page.locator("#tooltip")
    assert tooltip.is_visible() and tooltip.inner_text().startswith("step ")
    assert page.problems == []


def test_collection_page_overlays_and_compares(browser, report_collection, tmp_path):
    html = write_report([report_collection], tmp_path / "collection.html")
    page = Page(browser, html)
    page.check_renders(html, "report-collection.png")
    images = page.page.evaluate(IMAGES)
    assert len(images) >= 5  # 3 eval examples + 2 generations with images

    for name in ("dpo", "uni_dpo"):
        records = read_metrics(report_collection / "train" / name / "metrics.jsonl")
        last = [r for r in records if "loss" in r][-1]
        row = f'[data-table="comparison"] tr[data-run="{name}"]'
        assert page.values(f'{row} td[data-key="loss"]') == [last["loss"]]
        pope = json.loads((report_collection / "eval" / name / "pope.json").read_text())
        accuracy = page.values(f'{row} td[data-key="pope/accuracy"]')
        assert accuracy == [pope["metrics"]["accuracy"]]
    sft = json.loads((report_collection / "eval" / "sft" / "pope.json").read_text())
    assert page.values('[data-table="eval-0-pope"] td[data-label="sft"]') == [
        sft["metrics"]["accuracy"],
        sft["metrics"]["yes_ratio"],
    ]
    legend = page.page.locator(".chart").first.locator(".legend").inner_text()
    assert "dpo" in legend and "uni_dpo" in legend

    page.page.fill('input[type="range"]', "0.6")  # smoothing redraws every chart
    page.check_renders(html, "report-collection-smoothed.png")
