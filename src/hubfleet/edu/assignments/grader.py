"""The autograder: grades a batch of submissions in parallel, each notebook in its own sandbox.

:func:`grade_batch` grades on a thread pool (default: two threads per CPU core), each thread with its own
:class:`~.sandbox.Sandbox`. A submission is graded as nbgrader's ``autograde`` does: outputs cleared, nbgrader
cells checked against the :class:`~.models.GradingSpec` (a locked or test cell whose checksum does not match is
restored from the source — that is also how the hidden tests come back; a deleted one is put back), every code
cell run in order, and each grade cell scored by nbgrader's rules (:func:`.nbgrader_format.determine_grade`).
Each :class:`~.models.GradeResult` goes to ``on_result`` in the calling thread as soon as it is ready, so the
caller can store it transactionally and pass ``skip`` on a rerun: an interrupted batch resumes without losing or
grading twice anything that was stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from hubfleet.edu.assignments import nbgrader_format as fmt
from hubfleet.edu.assignments.journal import JournalSink
from hubfleet.edu.assignments.models import CellResult, CellSpec, GradeResult, GradingSpec, NotebookSpec, Submission
from hubfleet.edu.assignments.sandbox import (
    DEFAULT_PYTHON,
    DEFAULT_WORK_ROOT,
    Cell,
    CellKind,
    CellRun,
    NotebookRun,
    Sandbox,
    SandboxError,
    SandboxLimits,
    remove_own_cgroups,
    remove_stale_cgroups,
)
from hubfleet.edu.assignments.student_version import read_notebook
from hubfleet.system import cgroups

__all__ = ["BatchSummary", "JournalSink", "grade_batch", "grade_notebook", "limits_for"]

log = logging.getLogger(__name__)

WORKERS_PER_CORE = 2
"""Default sandboxes per core: much of grading is waiting (time limits running out, sleeps, I/O, the cell-by-cell
exchange), so two per core keep the cores busy; a CPU-bound cell shares its core with at most one other."""

RESTORED = "restored from the source: the submission had changed or deleted it"


@dataclass(frozen=True)
class BatchSummary:
    """What :func:`grade_batch` did: how many it graded and skipped, in how many seconds, with how many workers."""

    graded: int
    skipped: int
    seconds: float
    workers: int
    sandbox: dict[str, Any]
    """the forkserver's versions (Python, IPython) and what it preloaded"""


# --------------------------------------------------------------------------------------------- one notebook


def _restored_cell(spec: CellSpec) -> Any:
    """A cell rebuilt from the source (for a deleted locked or test cell)."""
    make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    return make.get(spec.cell_type, nbformat.v4.new_raw_cell)(spec.source)


def _set_metadata(cell: Any, spec: CellSpec) -> None:
    """The source's nbgrader metadata, whatever the submission says (nbgrader's OverwriteCells, stricter)."""
    meta = {
        "grade": spec.grade,
        "solution": spec.solution,
        "locked": spec.locked,
        "task": spec.task,
        "grade_id": spec.grade_id,
        "schema_version": fmt.SCHEMA_VERSION,
        "cell_type": spec.cell_type,
        "checksum": spec.checksum,
    }
    if spec.points is not None:
        meta["points"] = spec.points
    cell.metadata["nbgrader"] = meta
    if cell.cell_type != spec.cell_type:
        cell.cell_type = spec.cell_type
        if spec.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)


def prepare_notebook(nb: Any, spec: NotebookSpec, restore_deleted: bool = True) -> tuple[set[str], set[str]]:
    """Sanitize a submitted notebook in place, as nbgrader's autograde does; returns the grade_ids restored and the
    grade_ids missing (deleted, and not put back).

    Outputs are cleared; a cell whose grade_id is not in the source, or that repeats one a later cell has (nbgrader
    keeps the last), loses its nbgrader metadata; locked and test cells get the source's metadata and, if their
    checksum does not match, the source's text (with the hidden tests); with ``restore_deleted``, deleted ones are
    put back after the source cell before them.
    """
    by_id = {cell.grade_id: cell for cell in spec.cells}
    last = {fmt.grade_id(c): c for c in nb.cells if fmt.has_nbgrader(c) and fmt.grade_id(c) in by_id}
    seen: dict[str, Any] = {}
    restored: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        gid = fmt.grade_id(cell) if fmt.has_nbgrader(cell) else None
        if gid is None or last.get(gid) is not cell:
            cell.metadata.pop("nbgrader", None)
            continue
        seen[gid] = cell
        cell_spec = by_id[gid]
        _set_metadata(cell, cell_spec)
        if cell_spec.locked:
            checksum = fmt.compute_checksum(cell)
            if checksum not in (cell_spec.student_checksum, cell_spec.checksum):
                restored.add(gid)
            if checksum != cell_spec.checksum:
                cell.source = cell_spec.source
    position = 0
    missing: set[str] = set()
    for cell_spec in spec.cells:
        present = seen.get(cell_spec.grade_id)
        if present is not None:
            position = next(i for i, c in enumerate(nb.cells) if c is present) + 1
            continue
        if not (cell_spec.locked or cell_spec.grade):
            continue
        if not restore_deleted:
            missing.add(cell_spec.grade_id)
            continue
        cell = _restored_cell(cell_spec)
        _set_metadata(cell, cell_spec)
        nb.cells.insert(position, cell)
        seen[cell_spec.grade_id] = cell
        position += 1
        restored.add(cell_spec.grade_id)
    return restored, missing


def _first_problem(outputs: Sequence[Any]) -> tuple[str, str]:
    """(status, message) of the first output nbgrader counts against a cell."""
    for output in outputs:
        if output.get("output_type") == "error":
            ename, evalue = str(output.get("ename", "")), str(output.get("evalue", ""))
            status = "failed" if ename == "AssertionError" else "error"
            return status, f"{ename}: {evalue}" if evalue else ename
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            first = str(output.get("text", "")).strip().splitlines()
            return "failed", "output on stderr: " + (first[0][:200] if first else "")
    return "passed", ""


def _result(cell_spec: CellSpec, points: float | None, kind: str, status: str, message: str) -> CellResult:
    return CellResult(
        grade_id=cell_spec.grade_id,
        points=points,
        max_points=cell_spec.points or 0.0,
        kind=kind,
        status=status,
        message=message,
    )


def _is_auto(cell_spec: CellSpec) -> bool:
    return cell_spec.grade and not cell_spec.solution and cell_spec.cell_type == "code"


def score_notebook(
    nb: Any, spec: NotebookSpec, runs: dict[int, CellRun], restored: set[str], missing: set[str] = frozenset()
) -> list[CellResult]:
    """One :class:`CellResult` per grade or task cell of ``spec``, from the executed notebook ``nb``."""
    cells = {fmt.grade_id(c): (i, c) for i, c in enumerate(nb.cells) if fmt.has_nbgrader(c)}
    results = []
    for cell_spec in spec.cells:
        if not (cell_spec.grade or cell_spec.task):
            continue
        if cell_spec.grade_id in missing:
            auto = _is_auto(cell_spec)
            kind = "auto" if auto else "manual"
            results.append(_result(cell_spec, 0.0 if auto else None, kind, "missing", "deleted from the submission"))
            continue
        index, cell = cells[cell_spec.grade_id]
        if not _is_auto(cell_spec):
            points = fmt.determine_grade(cell, [], cell_spec.checksum)[0] if cell_spec.grade else None
            message = "no answer given" if points == 0.0 else "to be graded by hand"
            results.append(_result(cell_spec, points, "manual", "manual", message))
            continue
        run = runs.get(index, CellRun())
        if run.state in ("not-run", "timeout"):
            message = _first_problem(run.outputs)[1] or "not run: an earlier cell stopped the notebook"
            results.append(_result(cell_spec, 0.0, "auto", run.state, message))
            continue
        points = fmt.determine_grade(cell, cell.outputs, cell_spec.checksum)[0] or 0.0
        status, message = _first_problem(cell.outputs)
        if cell_spec.grade_id in restored:
            message = f"{RESTORED}; {message}" if message else RESTORED
            if status == "passed":
                status = "altered-restored"
        results.append(_result(cell_spec, points, "auto", status, message))
    return results


def unrunnable(spec: NotebookSpec, message: str) -> list[CellResult]:
    """Results for a notebook that could not run at all (missing, unreadable): 0 for every automatic cell."""
    return [
        _result(c, 0.0 if _is_auto(c) else None, "auto" if _is_auto(c) else "manual", "error", message)
        for c in spec.cells
        if c.grade or c.task
    ]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "".join(map(str, value)) if isinstance(value, list) else str(value)


def _clean_output(output: dict[str, Any], execution_count: int | None) -> Any:
    """A valid nbformat output from what the sandbox reported (student code can display anything)."""
    kind = output.get("output_type")
    if kind == "stream":
        name = "stderr" if output.get("name") == "stderr" else "stdout"
        return nbformat.v4.new_output("stream", name=name, text=_text(output.get("text", "")))
    if kind == "error":
        traceback = output.get("traceback")
        return nbformat.v4.new_output(
            "error",
            ename=_text(output.get("ename", "")),
            evalue=_text(output.get("evalue", "")),
            traceback=[_text(t) for t in traceback] if isinstance(traceback, list) else [],
        )
    if kind in ("execute_result", "display_data"):
        raw = output.get("data")
        data = {}
        for mime, value in raw.items() if isinstance(raw, dict) else ():
            is_json = mime == "application/json" or mime.endswith("+json")
            data[str(mime)] = value if is_json else _text(value)
        metadata = output.get("metadata") if isinstance(output.get("metadata"), dict) else {}
        if kind == "execute_result":
            return nbformat.v4.new_output(kind, data=data, metadata=metadata, execution_count=execution_count)
        return nbformat.v4.new_output(kind, data=data, metadata=metadata)
    return None


def _kind(cell_spec: CellSpec) -> CellKind:
    """Whose a code cell is: a test cell (autograded), an instructor's locked cell, or the student's."""
    if _is_auto(cell_spec):
        return "test"
    return "instructor" if cell_spec.locked else "student"


def grade_notebook(
    sandbox: Sandbox, workdir: Path, nb: Any, spec: NotebookSpec, restore_deleted: bool = True
) -> tuple[list[CellResult], str | None]:
    """Sanitize, run and score one submitted notebook (in place); returns its results and why its run stopped."""
    restored, missing = prepare_notebook(nb, spec, restore_deleted)
    code = [(i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    kinds = {c.grade_id: _kind(c) for c in spec.cells}
    cells: list[Cell] = [(fmt.source_text(cell), kinds.get(fmt.grade_id(cell) or "", "student")) for _, cell in code]
    run: NotebookRun = sandbox.run(workdir, cells, spec.defined_names)
    runs = {}
    for (index, cell), cell_run in zip(code, run.cells, strict=True):
        cleaned = (_clean_output(o, cell_run.execution_count) for o in cell_run.outputs)
        cell.outputs = [o for o in cleaned if o is not None]
        cell.execution_count = cell_run.execution_count
        runs[index] = cell_run
    return score_notebook(nb, spec, runs, restored, missing), run.failure


# --------------------------------------------------------------------------------------------- one submission


def _write_graded(folder: Path, name: str, nb: Any) -> str | None:
    """Write the executed notebook into the (root-owned) graded folder; an error message if it cannot."""
    target = folder / name
    if not target.parent.resolve().is_relative_to(folder.resolve()):
        return f"{name}: not written (a symlink in the submission points outside it)"
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    # nbformat's own layout, without validating again what _clean_output already made valid
    target.write_text(
        json.dumps(nb, sort_keys=True, indent=1, separators=(",", ": "), ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return None


def grade_submission(
    sandbox: Sandbox,
    spec: GradingSpec,
    submission: Submission,
    graded_root: Path | None,
    data_dir: Path | None = None,
) -> GradeResult:
    """Grade every notebook of one submission in ``sandbox``; the executed notebooks go to ``graded_root/<id>``.

    With ``data_dir``, the assignment's data files are taken from there, whatever the submission has instead (as
    nbgrader's autograde copies them from the source)."""
    started = time.monotonic()
    notebooks: dict[str, list[CellResult]] = {}
    errors: list[str] = []
    executed: list[tuple[str, Any]] = []
    folder = submission.folder
    missing = not folder.is_dir() or folder.is_symlink()
    if missing:
        errors.append("the submission folder is missing")
    data = [(name, data_dir / name) for name in spec.data_files if name not in spec.student_files] if data_dir else []
    workdir = sandbox.new_workdir(None if missing else folder, data)
    try:
        for nb_spec in spec.notebooks:
            if missing:
                notebooks[nb_spec.name] = unrunnable(nb_spec, "the submission folder is missing")
                continue
            try:
                nb = read_notebook(folder / nb_spec.name)
            except FileNotFoundError:
                errors.append(f"{nb_spec.name}: missing from the submission")
                notebooks[nb_spec.name] = unrunnable(nb_spec, "the notebook is missing")
                continue
            except (OSError, ValueError) as exc:
                message = str(exc).replace(str(folder), "").lstrip("/")
                errors.append(f"{nb_spec.name}: {message}")
                notebooks[nb_spec.name] = unrunnable(nb_spec, "the notebook could not be read")
                continue
            results, failure = grade_notebook(sandbox, workdir, nb, nb_spec, spec.restore_deleted)
            notebooks[nb_spec.name] = results
            executed.append((nb_spec.name, nb))
            if failure:
                errors.append(f"{nb_spec.name}: {failure}")
    finally:
        keep_as = graded_root / submission.id if graded_root is not None else None
        sandbox.release_workdir(workdir, keep_as)
    if keep_as is not None:
        errors.extend(e for name, nb in executed if (e := _write_graded(keep_as, name, nb)))
    every = [c for cells in notebooks.values() for c in cells]
    return GradeResult(
        submission_id=submission.id,
        assignment=spec.assignment,
        notebooks=notebooks,
        total=round(sum(c.points or 0.0 for c in every), 6),
        max_total=spec.max_total,
        errors=errors,
        graded_folder=keep_as,
        seconds=round(time.monotonic() - started, 3),
        graded_at=dt.datetime.now(dt.UTC),
    )


# --------------------------------------------------------------------------------------------- the batch


def limits_for(spec: GradingSpec, limits: SandboxLimits = SandboxLimits()) -> SandboxLimits:  # noqa: B008
    """``limits`` with the assignment's own time limit per cell, if it sets one (nbgrader's ``Execute.timeout``)."""
    return dataclasses.replace(limits, cell_seconds=spec.cell_seconds) if spec.cell_seconds else limits


def grade_batch(
    spec: GradingSpec,
    submissions: Iterable[Submission],
    *,
    on_result: Callable[[GradeResult], None],
    on_start: Callable[[str], None] | None = None,
    workers: int | None = None,
    limits: SandboxLimits = SandboxLimits(),  # noqa: B008 - frozen dataclass, safe as a default
    skip: Callable[[str], bool] | Collection[str] = (),
    graded_root: Path | None = None,
    data_dir: Path | None = None,
    python: Path = DEFAULT_PYTHON,
    work_root: Path = DEFAULT_WORK_ROOT,
) -> BatchSummary:
    """Grade ``submissions`` against ``spec`` in parallel sandboxes; each result goes to ``on_result`` when ready.

    * ``workers``: parallel sandboxes (default: :data:`WORKERS_PER_CORE` per CPU core available);
    * ``skip``: a predicate on ids, or a collection of ids: submissions already graded (e.g. in the caller's
      database) are not graded again;
    * ``on_result`` runs in the calling thread, one result at a time; if it raises, the batch stops (results not
      yet delivered are dropped and will be graded again on the next run) and the exception propagates;
    * ``on_start`` (optional) is told a submission's id when a sandbox starts on it (in that grading thread: keep
      it short and thread-safe) — for live progress;
    * ``graded_root``: where the executed notebooks (and anything the code wrote) are kept, one folder per
      submission id (root-owned; replaced on regrading); ``None`` keeps nothing;
    * ``data_dir``: a folder with the assignment's data files (the source or student version): each submission
      gets those, not its own copies (which it may have changed), as in nbgrader's autograde;

    Raises :class:`SandboxError` if no sandbox can start (not root, no user environment, ...); a duplicate
    submission id is a ``ValueError``. Problems of one submission end up in its result, never stop the batch.
    """
    is_done = skip if callable(skip) else skip.__contains__
    if data_dir is not None:
        missing_data = [name for name in spec.data_files if not (data_dir / name).is_file()]
        if missing_data:
            raise ValueError(f"{data_dir}: the assignment's data files {missing_data} are not there")
    todo = []
    ids: set[str] = set()
    skipped = 0
    for submission in submissions:
        if submission.id in ids:
            raise ValueError(f"submission id {submission.id!r} appears twice in the batch")
        ids.add(submission.id)
        if is_done(submission.id):
            skipped += 1
        else:
            todo.append(submission)
    count = max(1, min(workers or WORKERS_PER_CORE * len(os.sched_getaffinity(0)), len(todo) or 1))
    started = time.monotonic()
    if not todo:
        return BatchSummary(graded=0, skipped=skipped, seconds=0.0, workers=0, sandbox={})
    if graded_root is not None:
        graded_root.mkdir(parents=True, exist_ok=True)
        graded_root.chmod(0o700)
    driver = cgroups.detect()
    if driver is None:
        log.warning("no usable cgroup hierarchy: sandboxes run without memory, process and CPU limits")
    remove_stale_cgroups(driver)
    slots = _Slots(lambda: Sandbox(limits=limits, python=python, work_root=work_root, driver=driver))

    def grade(submission: Submission) -> GradeResult | None:
        if slots.stopped.is_set():
            return None
        if on_start is not None:
            on_start(submission.id)
        return slots.use(lambda box: grade_submission(box, spec, submission, graded_root, data_dir))

    graded = 0
    failure: BaseException | None = None
    try:
        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="grader") as pool:
            futures = [pool.submit(grade, submission) for submission in todo]
            try:
                for future in as_completed(futures):
                    try:
                        result = future.result()
                    except SandboxError as exc:  # that submission stays ungraded: the next run grades it
                        failure = failure or exc
                        continue
                    if result is not None:
                        on_result(result)
                        graded += 1
            finally:
                slots.stopped.set()  # on_result raised, or we are done: tasks not started yet do nothing
    finally:
        slots.close()
        remove_own_cgroups(driver)
    if failure is not None and graded + skipped < len(ids):
        raise failure
    return BatchSummary(
        graded=graded, skipped=skipped, seconds=round(time.monotonic() - started, 3), workers=count, sandbox=slots.info
    )


class _Slots:
    """One sandbox per grading thread, opened on the thread's first submission (a sandbox belongs to the thread
    that opened it); a sandbox that breaks is replaced once per submission; one that cannot start stops the batch."""

    def __init__(self, make: Callable[[], Sandbox]) -> None:
        self._make = make
        self._local = threading.local()
        self._lock = threading.Lock()
        self._boxes: list[Sandbox] = []
        self.stopped = threading.Event()
        self.info: dict[str, Any] = {}

    def _box(self) -> Sandbox:
        box: Sandbox | None = getattr(self._local, "box", None)
        if box is None:
            try:
                box = self._make()
            except SandboxError:
                self.stopped.set()
                raise
            with self._lock:
                self._boxes.append(box)
                self.info = self.info or dict(box.info)
            self._local.box = box
        return box

    def use(self, work: Callable[[Sandbox], GradeResult]) -> GradeResult:
        try:
            return work(self._box())
        except SandboxError:
            if self.stopped.is_set():
                raise
            self._local.box.close()
            self._local.box = None
            return work(self._box())

    def close(self) -> None:
        for box in self._boxes:
            box.close()
