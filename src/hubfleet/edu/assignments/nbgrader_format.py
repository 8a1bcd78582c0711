"""nbgrader's notebook format, reimplemented: cell metadata (schema v3), markers, stubs, checksums and scoring.

Existing nbgrader course material works unchanged because every rule here follows nbgrader 0.9.6:

* cell metadata ``cell.metadata.nbgrader = {grade, solution, locked, task, points, grade_id, checksum,
  schema_version, cell_type}``; a solution cell is never locked, a grade cell that is not a solution always is;
* ``### BEGIN SOLUTION`` / ``### END SOLUTION`` regions (any line *containing* the marker) are replaced by the stub
  ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` (code, per the notebook's language) or ``YOUR ANSWER
  HERE`` (markdown), indented like the marker; a solution cell without markers is replaced whole by the stub;
  stubs and markers can be configured as nbgrader's ``ClearSolutions``, ``ClearHiddenTests`` and
  ``ClearMarkScheme`` options are (:class:`FormatOptions`);
* ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` regions are removed from the student version, as are
  ``=== BEGIN MARK SCHEME ===`` / ``=== END MARK SCHEME ===`` regions;
* the checksum: MD5 over the UTF-8 of the source, the cell type, ``str()`` of the grade / solution / locked flags,
  the ``grade_id``, and ``str(float(points))`` for grade cells (nbgrader's ``utils.compute_checksum``);
* scoring a grade cell: a solution-and-grade cell (a manually graded answer) scores 0 if untouched (its checksum
  still matches), else waits for a grader; a code grade cell scores 0 on an ``error`` output **or any stderr
  output**, the number it displays as its result as partial credit, else full points; markdown cells are manual.

Cells are plain notebook dicts (``nbformat`` v4 nodes work too).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CODE_STUB",
    "DEFAULT_OPTIONS",
    "TEXT_STUB",
    "FormatError",
    "FormatOptions",
    "compute_checksum",
    "determine_grade",
    "grade_id",
    "has_nbgrader",
    "is_grade",
    "is_locked",
    "is_solution",
    "is_task",
    "points",
    "remove_hidden_tests",
    "remove_mark_scheme",
    "replace_solutions",
    "validate_cell",
]

SCHEMA_VERSION = 3
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
CODE_STUBS = {
    "python": CODE_STUB,
    "R": "# YOUR CODE HERE\nfail()",
    "matlab": "% YOUR CODE HERE\nerror('No Answer Given!')",
    "octave": "% YOUR CODE HERE\nerror('No Answer Given!')",
    "sas": "/* YOUR CODE HERE */\n %notImplemented;",
    "java": "// YOUR CODE HERE",
}
"""nbgrader 0.9's ``ClearSolutions.code_stub``: the stub of a code solution, by the notebook's language."""
TEXT_STUB = "YOUR ANSWER HERE"
ATTACHMENT = re.compile(r"!\[.*\]\(attachment:.+?\)")


class FormatError(ValueError):
    """A cell breaks nbgrader's rules (bad metadata, unbalanced markers, a solution region outside a solution cell)."""


class FormatOptions(BaseModel):
    """What nbgrader lets a course configure about stubs and markers (``nbgrader_config.py``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code_stubs: dict[str, str] = Field(default_factory=lambda: dict(CODE_STUBS))
    text_stub: str = TEXT_STUB
    begin_solution: str = "BEGIN SOLUTION"
    end_solution: str = "END SOLUTION"
    begin_hidden_tests: str = "BEGIN HIDDEN TESTS"
    end_hidden_tests: str = "END HIDDEN TESTS"
    begin_mark_scheme: str = "BEGIN MARK SCHEME"
    end_mark_scheme: str = "END MARK SCHEME"
    check_attachment_leakage: bool = True

    def code_stub(self, language: str) -> str:
        try:
            return self.code_stubs[language]
        except KeyError:
            raise FormatError(
                f"no code stub for the notebook's language {language!r} (ClearSolutions.code_stub)"
            ) from None


DEFAULT_OPTIONS = FormatOptions()


def _meta(cell: Mapping[str, Any]) -> Mapping[str, Any] | None:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, Mapping) else None


def has_nbgrader(cell: Mapping[str, Any]) -> bool:
    """Whether the cell carries nbgrader metadata at all."""
    return _meta(cell) is not None


def source_text(cell: Mapping[str, Any]) -> str:
    """The cell's source as one string (the on-disk format may split it into a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


# The flag readers return the raw metadata value (nbgrader does, and str() of it goes into the checksum).


def is_grade(cell: Mapping[str, Any]) -> Any:
    meta = _meta(cell)
    return meta.get("grade", False) if meta is not None else False


def is_solution(cell: Mapping[str, Any]) -> Any:
    meta = _meta(cell)
    return meta.get("solution", False) if meta is not None else False


def is_task(cell: Mapping[str, Any]) -> Any:
    meta = _meta(cell)
    return meta.get("task", False) if meta is not None else False


def is_locked(cell: Mapping[str, Any]) -> Any:
    """Solution cells are never locked, other grade cells always are, else the ``locked`` flag decides."""
    meta = _meta(cell)
    if meta is None or is_solution(cell):
        return False
    if is_grade(cell):
        return True
    return meta.get("locked", False)


def grade_id(cell: Mapping[str, Any]) -> str | None:
    meta = _meta(cell)
    value = meta.get("grade_id") if meta is not None else None
    return value if isinstance(value, str) else None


def points(cell: Mapping[str, Any]) -> float | None:
    """The cell's maximum points (grade and task cells), else ``None``."""
    meta = _meta(cell)
    if meta is None or not (is_grade(cell) or is_task(cell)):
        return None
    return float(meta.get("points", 0))


def compute_checksum(cell: Mapping[str, Any]) -> str:
    """nbgrader 0.9.6's checksum of a cell (needs ``grade_id``; grade cells also need ``points``)."""
    meta = _meta(cell)
    if meta is None or "grade_id" not in meta:
        raise FormatError("a checksum needs nbgrader metadata with a grade_id")
    digest = hashlib.md5(usedforsecurity=False)
    for part in (
        source_text(cell),
        cell["cell_type"],
        str(is_grade(cell)),
        str(is_solution(cell)),
        str(is_locked(cell)),
        meta["grade_id"],
    ):
        digest.update(part.encode("utf-8"))
    if is_grade(cell):
        digest.update(str(float(meta["points"])).encode("utf-8"))
    return digest.hexdigest()


def validate_cell(cell: Mapping[str, Any]) -> None:
    """Check a cell's nbgrader metadata as nbgrader's schema v3 validator does; :class:`FormatError` if broken."""
    meta = _meta(cell)
    if meta is None:
        return
    if not (is_grade(cell) or is_solution(cell) or is_locked(cell) or is_task(cell)):
        return
    gid = meta.get("grade_id")
    if not isinstance(gid, str) or not gid:
        raise FormatError("an nbgrader cell needs a non-empty grade_id")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", gid):
        raise FormatError(f"grade_id {gid!r}: only letters, digits, '_' and '-' are allowed")
    if is_task(cell) and (is_grade(cell) or is_solution(cell)):
        raise FormatError(f"cell {gid}: a task cell cannot also be a grade or solution cell")
    if is_task(cell) and cell.get("cell_type") != "markdown":
        raise FormatError(f"cell {gid}: task cells must be markdown cells")
    if cell.get("cell_type") == "markdown" and not is_task(cell) and bool(is_grade(cell)) != bool(is_solution(cell)):
        raise FormatError(f"cell {gid}: a markdown cell that is graded must be a solution cell too, and vice versa")
    if is_grade(cell) or is_task(cell):
        value = meta.get("points")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise FormatError(f"cell {gid}: points must be a number >= 0, not {value!r}")
    version = meta.get("schema_version", 0)
    if version != SCHEMA_VERSION:
        raise FormatError(
            f"cell {gid}: nbgrader metadata schema_version {version!r}; only version 3 is supported "
            "(`nbgrader update` upgrades older notebooks)"
        )


def _strip_regions(
    source: str, begin: str, end: str, stub: Sequence[str] | None, forbidden: re.Pattern[str] | None = None
) -> tuple[str, bool]:
    """Drop the lines from one containing ``begin`` to one containing ``end``; put ``stub`` (indented) instead.
    A line inside a region matching ``forbidden`` is an error."""
    kept: list[str] = []
    inside = False
    found = False
    for line in source.split("\n"):
        if begin in line:
            if inside:
                raise FormatError(f"nested '{begin}' markers")
            inside = found = True
            if stub is not None:
                indent = re.match(r"\s*", line).group(0)  # type: ignore[union-attr]  # always matches
                kept.extend(indent + stub_line for stub_line in stub)
        elif end in line:
            inside = False
        elif inside and forbidden is not None and forbidden.search(line):
            raise FormatError(
                "an attachment inside a mark scheme would reach the student version: embed the image instead"
            )
        elif not inside:
            kept.append(line)
    if inside:
        raise FormatError(f"'{begin}' without a matching '{end}'")
    return "\n".join(kept), found


def replace_solutions(
    cell: Mapping[str, Any], options: FormatOptions = DEFAULT_OPTIONS, language: str = "python"
) -> str:
    """The student version of a cell's source: solution regions, or a whole solution cell, replaced by the stub."""
    stub = options.code_stub(language) if cell["cell_type"] == "code" else options.text_stub
    source, replaced = _strip_regions(source_text(cell), options.begin_solution, options.end_solution, stub.split("\n"))
    if replaced and not is_solution(cell):
        raise FormatError("a solution region in a cell that is not a solution cell (mark it 'Autograded answer')")
    if is_solution(cell) and not replaced:
        return stub
    return source


def remove_hidden_tests(cell: Mapping[str, Any], options: FormatOptions = DEFAULT_OPTIONS) -> str:
    """The cell's source without its hidden-test regions (only grade cells may have them)."""
    source, removed = _strip_regions(source_text(cell), options.begin_hidden_tests, options.end_hidden_tests, None)
    if removed and not is_grade(cell):
        raise FormatError("a hidden-test region in a cell that is not a grade cell (mark it 'Autograder tests')")
    return source


def remove_mark_scheme(cell: Mapping[str, Any], options: FormatOptions = DEFAULT_OPTIONS) -> str:
    """The cell's source without its mark-scheme regions (only task cells may have them)."""
    forbidden = ATTACHMENT if options.check_attachment_leakage else None
    source, removed = _strip_regions(
        source_text(cell), options.begin_mark_scheme, options.end_mark_scheme, None, forbidden
    )
    if removed and not is_task(cell):
        raise FormatError("a mark-scheme region in a cell that is not a task cell (mark it 'Manually graded task')")
    return source


def _partial_credit(output: Mapping[str, Any], max_points: float) -> float:
    """nbgrader's partial credit: a displayed number in [0, max_points] is the score, anything else full points."""
    text = output.get("data", {}).get("text/plain")
    if isinstance(text, list):
        if len(text) != 1:
            return max_points
        text = text[0]
    try:
        value = float(text)
    except (TypeError, ValueError):
        return max_points
    if value < 0 or value != value:  # negative or NaN: nbgrader warns and gives full points
        return max_points
    return min(value, max_points)


def determine_grade(
    cell: Mapping[str, Any], outputs: Sequence[Mapping[str, Any]], source_checksum: str | None
) -> tuple[float | None, float]:
    """(score, max points) of an executed grade cell, as nbgrader's ``determine_grade``; score ``None`` = manual.

    ``source_checksum`` is the checksum recorded for the cell at generation (nbgrader's source-cell checksum).
    """
    if not is_grade(cell):
        raise FormatError("not a grade cell")
    max_points = float(_meta(cell)["points"])  # type: ignore[index]  # a grade cell has metadata
    if is_solution(cell):
        return (0.0 if source_checksum == compute_checksum(cell) else None), max_points
    if cell["cell_type"] != "code":
        return None, max_points
    for output in outputs:
        if output.get("output_type") == "error" or (
            output.get("output_type") == "stream" and output.get("name") == "stderr"
        ):
            return 0.0, max_points
        if output.get("output_type") == "execute_result":
            return _partial_credit(output, max_points), max_points
    return max_points, max_points
