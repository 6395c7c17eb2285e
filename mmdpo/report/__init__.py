"""One self-contained HTML page per run or group of runs: ``mmdpo report RUN [RUN ...]``.

The page holds its data, script and style inline (no server, no network, no external file):
the config, a data summary, the curves of ``metrics.jsonl`` (overlaid for several runs), the
benchmark results saved under ``eval/<label>/``, generated answers, checkpoints, and with
several runs a comparison table. From Python::

    from mmdpo.report import write_report
    write_report(["runs/ablation"], "runs/ablation/report.html",
                 extra_tables=[{"title": "Ablation", "columns": [...], "rows": [[...], ...]}])
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from mmdpo.report.collect import collect, plain
from mmdpo.run_folder import REPORT_FILE  # named with the rest of the run folder's layout

DATA_ELEMENT_ID = "report-data"

__all__ = ["REPORT_FILE", "build_report", "render_html", "write_report"]


def build_report(
    paths: Sequence[str | os.PathLike],
    *,
    title: str | None = None,
    names: Sequence[str] | None = None,
    extra_tables: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The data the page draws (JSON-safe), from run folders or folders holding runs.

    Args:
        paths: run folders or collections (an ablation folder, a demo or preset output).
        title: the page title (default: the runs' names).
        names: one label per run found, in the order found (default: short path names).
        extra_tables: more tables shown first, each ``{"title", "columns", "rows",
            "note"?}``; cells are numbers or text (an ablation's mean, CI, difference to DPO).
    """
    from mmdpo import __version__

    data = collect(paths, names=names)
    for table in extra_tables:
        if not {"title", "columns", "rows"} <= set(table):
            raise ValueError("extra_tables: each table needs title, columns and rows")
    runs = data["runs"]
    if title is None:  # the folder's name, or the runs' names
        roots = [Path(p).resolve().name for p in paths]
        labels = [run["name"] for run in runs]
        title = roots[0] if len(roots) == 1 else ", ".join(labels[:4]) + ("…" * (len(labels) > 4))
    data.update(
        title=title,
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        version=__version__,
        extra_tables=plain(list(extra_tables)),
    )
    return data


def _asset(name: str) -> str:
    return resources.files("mmdpo.report").joinpath("assets", name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON that is safe inside a <script> element (no ``</script>``, no ``<!--``)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_html(data: dict[str, Any]) -> str:
    """The page: the template with the style, the script and the data inlined."""
    from html import escape

    replacements = {
        "/*STYLE*/": _asset("report.css"),
        "/*SCRIPT*/": _asset("report.js"),
        "/*DATA*/": embed_json(data),
        "<!--TITLE-->": escape(str(data.get("title", "mmdpo report"))),
    }
    # One pass over the template only: the data or the script may contain a marker's text.
    pattern = "|".join(re.escape(marker) for marker in replacements)
    return re.sub(pattern, lambda match: replacements[match.group(0)], _asset("template.html"))


def write_report(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    names: Sequence[str] | None = None,
    extra_tables: Sequence[dict[str, Any]] = (),
) -> Path:
    """Write the report page and return its path.

    ``out`` defaults to ``report.html`` inside the one folder given; with several folders it
    is required. Other arguments as :func:`build_report`.
    """
    if out is None:
        if len(paths) != 1:
            raise ValueError("several runs: say where the report goes (--out FILE)")
        out = Path(paths[0]) / REPORT_FILE
    data = build_report(paths, title=title, names=names, extra_tables=extra_tables)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(render_html(data), encoding="utf-8")
    os.replace(temporary, out)
    return out
