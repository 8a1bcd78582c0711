"""Feedback pages: a student's graded notebooks as HTML, each graded cell followed by its score and message.

Used for the exchange's feedback pages and for ``feedback/`` of an nbgrader course folder. The notebooks are
rendered by nbconvert with sanitised HTML; the page is meant to be served with a ``sandbox`` Content-Security-Policy
(student notebooks can carry anything).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass

import bleach
import nbformat
from nbconvert import HTMLExporter
from nbconvert.filters.strings import clean_html

__all__ = ["CellScore", "feedback_page", "notebooks_page"]


@dataclass(frozen=True)
class CellScore:
    """A graded cell's score as the page shows it."""

    score: float
    max_score: float
    status: str = ""
    message: str = ""
    comment: str = ""
    grader: str = ""


SAFE_TAGS = frozenset(
    {*bleach.ALLOWED_TAGS, "p", "br", "hr", "pre", "code", "div", "span", "sub", "sup", "del", "img"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "dl", "dt", "dd"}
)
"""Tags a rendered notebook keeps (nbconvert's own `clean_html` escapes paragraphs and headings of markdown)."""

SAFE_ATTRIBUTES = {**bleach.ALLOWED_ATTRIBUTES, "*": ["class", "id"], "img": ["src", "alt"]}


def _clean_html(element: str | bytes) -> str:
    """nbconvert's `clean_html` with the tags markdown makes (no script, no event handler, no style element)."""
    text = element.decode() if isinstance(element, bytes) else str(element)
    return bleach.clean(text, tags=SAFE_TAGS, attributes=SAFE_ATTRIBUTES, protocols=["http", "https", "mailto", "data"])


def _exporter() -> HTMLExporter:
    """nbconvert's basic HTML, sanitised (the pages are also served sandboxed: no script runs, nothing loads)."""
    exporter = HTMLExporter(template_name="basic")
    exporter.sanitize_html = True
    exporter.register_filter(clean_html.__name__, _clean_html)
    return exporter


def _note(cell: CellScore) -> str:
    lines = [f"**Score: {cell.score:g} / {cell.max_score:g}** ({cell.status or 'graded'})"]
    if cell.message:
        lines.append("\n```\n" + cell.message.replace("```", "'''")[:4000] + "\n```")
    if cell.comment:
        lines.append(f"\n*{cell.grader}:* " + cell.comment.replace("\n", " "))
    return "\n".join(lines)


def feedback_page(
    title: str,
    student: str,
    notebooks: Mapping[str, bytes],
    scores: Mapping[tuple[str, str], CellScore],
    *,
    total: float,
    max_total: float,
    raw_total: float | None = None,
    kept: float = 1.0,
) -> str:
    """One HTML page: the total (and the late policy's effect) at the top, then each notebook (path → its JSON) with
    its graded cells (``scores`` by (notebook path, grade_id)) annotated."""
    exporter = _exporter()
    title = html.escape(title)
    parts = [f"<h1>{title}</h1>", f"<p>Student: <b>{html.escape(student)}</b> — score <b>{total:g} / {max_total:g}</b>"]
    if kept < 1:
        parts.append(f" (late: {raw_total if raw_total is not None else total:g} points, {kept:.0%} kept)")
    parts.append("</p>")
    for path, data in sorted(notebooks.items()):
        try:
            notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
        except (UnicodeDecodeError, ValueError) as exc:
            parts.append(f"<h2>{html.escape(path)}</h2><p>unreadable notebook: {html.escape(str(exc))}</p>")
            continue
        cells = []
        for cell in notebook.cells:
            cells.append(cell)
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            score = scores.get((path, grade_id)) if grade_id else None
            if score is not None:
                cells.append(nbformat.v4.new_markdown_cell(_note(score)))
        notebook.cells = cells
        body, _ = exporter.from_notebook_node(notebook)
        parts.append(f"<h2>{html.escape(path)}</h2>{body}")
    return _page(f"{title} — feedback", "".join(parts))


def notebooks_page(title: str, files: Mapping[str, bytes]) -> str:
    """The notebooks among `files` (path → content) as one sanitised HTML page, in path order."""
    exporter = _exporter()
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for path, data in sorted(files.items()):
        if not path.endswith(".ipynb"):
            continue
        try:
            body, _ = exporter.from_notebook_node(nbformat.reads(data.decode("utf-8"), as_version=4))
        except (UnicodeDecodeError, ValueError) as exc:
            body = f"<p>unreadable notebook: {html.escape(str(exc))}</p>"
        parts.append(f"<h2>{html.escape(path)}</h2>{body}")
    return _page(html.escape(title), "".join(parts))


def _page(title: str, body: str) -> str:
    """A standalone page (`title` already escaped)."""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}pre{white-space:pre-wrap}"
        ".score{background:#eef;border-left:4px solid #44a;padding:.3em .8em}</style>"
        f"</head><body>{body}</body></html>"
    )
