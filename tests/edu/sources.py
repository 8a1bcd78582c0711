"""Assignment source folders for tests: nbgrader cell metadata and a folder with `assignment.yaml` and a notebook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat


def nbgrader(**fields: Any) -> dict[str, Any]:
    """A cell's metadata for nbgrader (schema 3): neither graded, nor a solution, nor locked, unless `fields` say."""
    return {"nbgrader": {"schema_version": 3, "grade": False, "solution": False, "locked": False, **fields}}


def solution_cell(grade_id: str, code: str) -> nbformat.NotebookNode:
    """A solution cell: the first line of `code` (a `def` line) stays in the student version, the rest is the
    solution."""
    header, rest = code.split("\n", 1)
    return nbformat.v4.new_code_cell(
        f"{header}\n    ### BEGIN SOLUTION\n{rest}\n    ### END SOLUTION",
        metadata=nbgrader(solution=True, grade_id=grade_id),
    )


def graded_cell(
    grade_id: str, points: float, visible: str, hidden: str = "", *, locked: bool = False
) -> nbformat.NotebookNode:
    """An autograded test cell worth `points`: `visible` tests, then `hidden` ones (taken out of the student
    version)."""
    parts = [visible] if visible else []
    if hidden:
        parts.append(f"### BEGIN HIDDEN TESTS\n{hidden}\n### END HIDDEN TESTS")
    metadata = nbgrader(grade=True, points=points, grade_id=grade_id, locked=locked)
    return nbformat.v4.new_code_cell("\n".join(parts), metadata=metadata)


def write_source(folder: Path, config: str, cells: list[nbformat.NotebookNode], notebook: str) -> Path:
    """An assignment's source folder (made here): `config` as its assignment.yaml, `cells` as `notebook`."""
    folder.mkdir(parents=True)
    (folder / "assignment.yaml").write_text(config)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), str(folder / notebook))
    return folder
