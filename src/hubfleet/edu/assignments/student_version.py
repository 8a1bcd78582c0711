"""The student version of an assignment and its :class:`~.models.GradingSpec`, as ``nbgrader generate_assignment``.

Per notebook, in nbgrader's order: lock cells (``deletable``/``editable`` metadata), replace solutions by stubs,
clear outputs, validate the metadata, record checksums and the source of every nbgrader cell (with its hidden
tests: that is what grading restores), remove hidden tests and mark schemes, record the student checksums. Data
files are copied as they are.
"""

from __future__ import annotations

import ast
import copy
import os
import shutil
from pathlib import Path
from typing import Any

import nbformat

from hubfleet.edu.assignments import nbgrader_format as fmt
from hubfleet.edu.assignments._child.hygiene import defined_names
from hubfleet.edu.assignments.autotest import AutotestError, SnippetSession, instantiate, needs_autotests
from hubfleet.edu.assignments.models import CellSpec, GradingSpec, NotebookSpec
from hubfleet.edu.assignments.source import AssignmentSource, SourceError

__all__ = ["generate", "read_notebook"]

MAX_NOTEBOOK_BYTES = 50 * 1024 * 1024


def read_notebook(path: Path) -> Any:
    """Read a v4 notebook without following a symlink; ``ValueError``/``OSError`` name the file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_NOTEBOOK_BYTES + 1)
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"{path}: larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB")
    try:
        return nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception as exc:  # nbformat raises a zoo of types for broken JSON/schema
        raise ValueError(f"{path}: not a readable notebook: {exc}") from None


def _lock(cell: Any) -> None:
    """nbgrader's LockCells: nbgrader cells cannot be deleted; locked and test cells cannot be edited."""
    if fmt.is_solution(cell):
        cell.metadata["deletable"] = False
    elif fmt.is_grade(cell) or fmt.is_locked(cell):
        cell.metadata["deletable"] = False
        cell.metadata["editable"] = False


def _record_checksum(cell: Any) -> str:
    checksum = fmt.compute_checksum(cell)
    cell.metadata.nbgrader["checksum"] = checksum
    cell.metadata.nbgrader["cell_type"] = cell.cell_type
    return checksum


def _normalize_flags(cell: Any) -> None:
    """Store the flags as booleans: checksums hash ``str()`` of them, and grading compares against booleans."""
    meta = cell.metadata.get("nbgrader")
    if isinstance(meta, dict):
        for flag in ("grade", "solution", "locked", "task"):
            if flag in meta:
                meta[flag] = bool(meta[flag])


def _is_recorded(cell: Any) -> bool:
    return bool(fmt.is_grade(cell) or fmt.is_solution(cell) or fmt.is_locked(cell) or fmt.is_task(cell))


def _defined_names(nb: Any) -> tuple[str, ...]:
    """Names the source notebook's code cells define at the top level (IPython's magic and shell lines aside)."""
    names: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = [line for line in fmt.source_text(cell).split("\n") if not line.lstrip().startswith(("%", "!"))]
        try:
            names |= defined_names(ast.parse("\n".join(lines)))
        except SyntaxError:
            continue
    return tuple(sorted(names))


def _student_notebook(
    nb: Any, where: str, options: fmt.FormatOptions, language: str
) -> tuple[Any, tuple[CellSpec, ...]]:
    """Turn a source notebook into the student version (in place) and return the recorded cells."""
    sources: list[tuple[Any, str, str]] = []  # (cell, graded source, its checksum)
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells):
        at = f"{where}, cell {index + 1}"
        try:
            _lock(cell)
            cell.source = fmt.replace_solutions(cell, options, language)
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
            fmt.validate_cell(cell)
            _normalize_flags(cell)
            if not _is_recorded(cell):
                fmt.remove_hidden_tests(cell, options)  # raises if a non-grade cell has hidden tests
                fmt.remove_mark_scheme(cell, options)  # raises if a non-task cell has a mark scheme
                continue
            gid = fmt.grade_id(cell)
            if gid in seen:
                raise fmt.FormatError(f"grade_id {gid!r} is used twice")
            seen.add(gid)  # type: ignore[arg-type]  # validate_cell checked it
            checksum = _record_checksum(cell)
            sources.append((cell, cell.source, checksum))
            cell.source = fmt.remove_mark_scheme({**cell, "source": fmt.remove_hidden_tests(cell, options)}, options)
        except fmt.FormatError as exc:
            raise SourceError(f"{at}: {exc}") from None
    specs = []
    for cell, graded_source, checksum in sources:
        specs.append(
            CellSpec(
                grade_id=fmt.grade_id(cell),
                cell_type=cell.cell_type,
                grade=bool(fmt.is_grade(cell)),
                solution=bool(fmt.is_solution(cell)),
                locked=bool(fmt.is_locked(cell)),
                task=bool(fmt.is_task(cell)),
                points=fmt.points(cell),
                source=graded_source,
                checksum=checksum,
                student_checksum=_record_checksum(cell),
            )
        )
    return nb, tuple(specs)


def _cells_of(path: Path | None) -> list[Any]:
    if path is None:
        return []
    try:
        return list(read_notebook(path).cells)
    except (OSError, ValueError) as exc:
        raise SourceError(str(exc)) from None


def _with_header_footer(nb: Any, source: AssignmentSource) -> Any:
    """nbgrader's IncludeHeaderFooter: the header notebook's cells, the notebook's, the footer's."""
    nb.cells = [*_cells_of(source.header), *nb.cells, *_cells_of(source.footer)]
    return nb


def source_notebook(source: AssignmentSource, name: str, autotests: SnippetSession | None) -> Any:
    """A source notebook as nbgrader's generate sees it before clearing solutions: with the header and footer
    cells, and its AUTOTEST lines turned into tests (which runs it in ``autotests``' sandboxed process)."""
    path = source.root / name
    try:
        nb = read_notebook(path)
    except (OSError, ValueError) as exc:
        raise SourceError(str(exc)) from None
    language = nb.metadata.get("kernelspec", {}).get("language", "python")
    if language != "python":
        raise SourceError(f"{path}: a {language!r} notebook; hubfleet grades Python notebooks only")
    nb = _with_header_footer(nb, source)
    if needs_autotests(nb, source.autotest):
        try:
            instantiate(nb, list(source.autotest_files), autotests, source.autotest, where=str(path))
        except AutotestError as exc:
            raise SourceError(str(exc)) from None
    nb.metadata.pop("celltoolbar", None)
    return nb


def generate(source: AssignmentSource, out_dir: Path | str, *, autotests: SnippetSession | None = None) -> GradingSpec:
    """Write the student version of ``source`` into ``out_dir`` (created; must be empty or missing).

    ``autotests`` opens the sandboxed process that ``### AUTOTEST`` cells need (:func:`.autotest.sandbox_session`);
    without it such cells are an error. Returns the :class:`GradingSpec` (it holds the hidden tests: store it
    where students cannot read it). Raises :class:`SourceError` naming the notebook and cell for anything nbgrader
    would refuse.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise SourceError(f"{out}: not empty (the student version goes into a new folder)")
    notebooks = []
    student_versions = []
    for name in source.notebooks:
        nb = source_notebook(source, name, autotests)
        student, cells = _student_notebook(copy.deepcopy(nb), str(source.root / name), source.format, "python")
        notebooks.append(NotebookSpec(name=name, cells=cells, defined_names=_defined_names(nb)))
        student_versions.append((name, student))
    out.mkdir(parents=True, exist_ok=True)
    for name, student in student_versions:
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(student, str(target))
    for name in source.data_files:
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.root / name, target)
    return GradingSpec(
        assignment=source.name,
        title=source.title,
        due=source.due,
        late_policy=source.late_policy,
        notebooks=tuple(notebooks),
        data_files=source.data_files,
        student_files=source.student_files,
        restore_deleted=source.restore_deleted,
        cell_seconds=source.cell_seconds,
        instant_feedback=source.instant_feedback,
    )


def _has_code(source: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("#") for line in source.split("\n"))


def visible_only(spec: GradingSpec, release: Path) -> GradingSpec:
    """The spec of what students can see: every locked and test cell as the student version (``release``) has it —
    hidden tests out — and test cells that hold nothing but hidden tests left out. Grading with it never sends a
    hidden test to the sandbox (instant feedback)."""
    notebooks = []
    for nb_spec in spec.notebooks:
        student = read_notebook(release / nb_spec.name)
        released = {fmt.grade_id(c): c for c in student.cells if fmt.has_nbgrader(c)}
        cells = []
        for cell in nb_spec.cells:
            shown = released.get(cell.grade_id)
            if shown is None:
                raise SourceError(f"{release / nb_spec.name}: cell {cell.grade_id} is not in the student version")
            source = fmt.source_text(shown)
            if cell.grade and not cell.solution and cell.cell_type == "code" and not _has_code(source):
                continue  # hidden tests only
            checksum = fmt.compute_checksum(shown)
            cells.append(cell.model_copy(update={"source": source, "checksum": checksum, "student_checksum": checksum}))
        notebooks.append(nb_spec.model_copy(update={"cells": tuple(cells)}))
    return spec.model_copy(update={"notebooks": tuple(notebooks)})
