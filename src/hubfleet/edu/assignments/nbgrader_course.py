"""An nbgrader course folder, read as it is: ``nbgrader_config.py``, ``source/``, ``release/``,
``submitted/<student>/<assignment>/`` (with ``timestamp.txt``), ``autograded/``, ``feedback/`` and ``gradebook.db``.

:meth:`NbgraderCourse.load` turns ``source/<assignment>`` into the same :class:`~.source.AssignmentSource` an
``assignment.yaml`` folder gives (stubs, markers, header and footer notebooks, AUTOTEST options, the time limit per
cell and nbgrader's cell rules from the configuration; the due date from ``gradebook.db`` when it has one), so the
student version, the grading and the scores follow nbgrader's rules. :meth:`~NbgraderCourse.submissions` finds the
students' submissions, and the ``*_dir`` methods give where nbgrader's layout puts each step's files. The folder
names and ``directory_structure`` follow the configuration.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import re
import sqlite3
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from hubfleet.edu.assignments.nbgrader_config import CONFIG_FILE, ConfigError, CourseConfig, read_config
from hubfleet.edu.assignments.source import CONFIG_FILE as ASSIGNMENT_FILE
from hubfleet.edu.assignments.source import AssignmentSource, SourceError, load_source

__all__ = [
    "GradebookCell",
    "GradebookSubmission",
    "NbgraderCourse",
    "NbgraderSubmission",
    "find_course",
    "load_any",
    "parse_timestamp",
    "read_gradebook",
]

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
TIMESTAMP_FILE = "timestamp.txt"


@dataclass(frozen=True)
class NbgraderSubmission:
    """One student's submission of an assignment in ``submitted/``."""

    student: str
    folder: Path
    timestamp: dt.datetime | None


def parse_timestamp(text: str) -> dt.datetime:
    """A ``timestamp.txt`` as nbgrader writes and reads it: ISO 8601, or ``YYYY-MM-DD HH:MM:SS[.ffffff] ZONE``
    (``UTC``, ``America/Los_Angeles`` …); without a zone, UTC."""
    text = text.strip()
    head, _, zone = text.rpartition(" ")
    when: dt.datetime
    if head and zone and not zone[0].isdigit() and zone[0] not in "+-":
        try:
            tz = zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r} in {text!r}") from None
        when = dt.datetime.fromisoformat(head).replace(tzinfo=tz)
    else:
        when = dt.datetime.fromisoformat(text)
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


@dataclass(frozen=True)
class NbgraderCourse:
    """An nbgrader course folder (the one holding ``nbgrader_config.py``)."""

    root: Path
    config: CourseConfig

    @classmethod
    def open(cls, root: Path | str) -> NbgraderCourse:
        """Read the course at ``root``; :class:`~.source.SourceError` if its configuration cannot be honoured."""
        folder = Path(root).resolve()
        if not folder.is_dir():
            raise SourceError(f"{folder}: not a folder")
        try:
            config = read_config(folder / CONFIG_FILE)
        except ConfigError as exc:
            raise SourceError(str(exc)) from None
        return cls(root=folder, config=config)

    # ------------------------------------------------------------------------------------------ layout

    def _path(self, step: str, student: str, assignment: str) -> Path:
        relative = self.config.directory_structure.format(
            nbgrader_step=step, student_id=student, assignment_id=assignment
        )
        return (self.root / relative).resolve()

    def source_dir(self, assignment: str) -> Path:
        return self._path(self.config.source_directory, ".", assignment)

    def release_dir(self, assignment: str) -> Path:
        return self._path(self.config.release_directory, ".", assignment)

    def submitted_dir(self, student: str, assignment: str) -> Path:
        return self._path(self.config.submitted_directory, student, assignment)

    def autograded_dir(self, student: str, assignment: str) -> Path:
        return self._path(self.config.autograded_directory, student, assignment)

    def feedback_dir(self, student: str, assignment: str) -> Path:
        return self._path(self.config.feedback_directory, student, assignment)

    def hubfleet_dir(self) -> Path:
        """Where hubfleet keeps its grading specs and score journals in the course folder (``.hubfleet/``)."""
        return self.root / ".hubfleet"

    def _names(self, step: str, field_name: str, **known: str) -> list[str]:
        """The values of ``field_name`` (``assignment_id`` or ``student_id``) that exist on disk for ``step``,
        with the other fields as ``known`` (``*``: any)."""
        values = {"nbgrader_step": step, **known, field_name: "\0"}
        relative = os.path.normpath(self.config.directory_structure.format(**values))
        pattern = relative.replace("\0", "*")
        regex = "".join(
            "(?P<value>[^/]+)" if part == "\0" else ("[^/]+" if part == "*" else re.escape(part))
            for part in re.split(r"(\0|\*)", relative)
        )
        found = set()
        for path in self.root.glob(pattern):
            match = re.fullmatch(regex, path.relative_to(self.root).as_posix())
            if path.is_dir() and match and not match.group("value").startswith("."):
                found.add(match.group("value"))
        return sorted(found)

    def assignments(self) -> list[str]:
        """The assignments with a source folder."""
        return self._names(self.config.source_directory, "assignment_id", student_id=".")

    # ------------------------------------------------------------------------------------------ assignments

    def _copied(self, relative: Path) -> bool:
        """Whether nbgrader copies this file (``CourseDirectory.ignore`` / ``include`` / ``max_file_size``)."""
        parts = relative.parts
        if any(part.startswith(".") for part in parts):
            return False
        if any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in self.config.ignore):
            return False
        return any(fnmatch.fnmatch(relative.name, pattern) for pattern in self.config.include)

    def due(self, assignment: str) -> dt.datetime | None:
        """The assignment's due date in ``gradebook.db`` (nbgrader stores naive UTC), if any."""
        gradebook = self.gradebook_path()
        if gradebook is None:
            return None
        with sqlite3.connect(f"file:{gradebook}?mode=ro", uri=True) as db:
            row = db.execute("SELECT duedate FROM assignment WHERE name = ?", (assignment,)).fetchone()
        if not row or not row[0]:
            return None
        return dt.datetime.fromisoformat(str(row[0])).replace(tzinfo=dt.UTC)

    def gradebook_path(self) -> Path | None:
        """The course's ``gradebook.db`` (``CourseDirectory.db_url``, a SQLite URL; default in the root)."""
        url = self.config.db_url or "sqlite:///gradebook.db"
        if not url.startswith("sqlite:///"):
            raise SourceError(f"{url}: only SQLite gradebooks (sqlite:///...) can be read")
        path = Path(url.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else self.root / path
        return path if path.is_file() else None

    def load(self, assignment: str) -> AssignmentSource:
        """``source/<assignment>`` as an :class:`~.source.AssignmentSource` with the course's options."""
        if not NAME_RE.fullmatch(assignment):
            raise SourceError(f"{assignment!r}: use letters, digits, '.', '-' and '_' in assignment names")
        folder = self.source_dir(assignment)
        if not folder.is_dir():
            raise SourceError(f"{folder}: no such assignment in the course's source folder")
        notebooks = sorted(p.name for p in folder.glob("*.ipynb") if p.is_file() and not p.name.startswith("."))
        if not notebooks:
            raise SourceError(f"{folder}: no notebook (*.ipynb)")
        data = []
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_symlink():
                raise SourceError(f"{path}: symbolic links are not allowed in an assignment folder")
            if not path.is_file() or relative.as_posix() in notebooks or not self._copied(relative):
                continue
            if path.stat().st_size > self.config.max_file_size_kb * 1024 or path.suffix == ".ipynb":
                continue
            data.append(relative.as_posix())
        c = self.config

        def course_file(name: str | None) -> Path | None:
            if not name:
                return None
            path = (self.root / name).resolve()
            if not path.is_file():
                raise SourceError(f"{path}: the course's IncludeHeaderFooter notebook is missing")
            return path

        return AssignmentSource(
            root=folder,
            name=assignment,
            title=assignment,
            due=self.due(assignment),
            late_policy=None,
            notebooks=tuple(notebooks),
            data_files=tuple(data),
            header=course_file(c.header),
            footer=course_file(c.footer),
            format=c.format,
            autotest=c.autotest,
            autotest_files=(folder / c.autotest.autotest_filename, self.root / c.autotest.autotest_filename),
            restore_deleted=c.add_missing_cells,
            student_files=tuple(c.exclude_overwriting.get(assignment, ())),
            cell_seconds=c.cell_seconds,
        )

    # ------------------------------------------------------------------------------------------ submissions

    def submissions(self, assignment: str, students: list[str] | None = None) -> list[NbgraderSubmission]:
        """The students' submissions of ``assignment`` (all, or those of ``students``), by student."""
        found = []
        for student in students or self._names(self.config.submitted_directory, "student_id", assignment_id=assignment):
            folder = self.submitted_dir(student, assignment)
            if not folder.is_dir():
                if students:
                    raise SourceError(f"{folder}: no submission of {assignment} by {student}")
                continue
            if not NAME_RE.fullmatch(student):
                raise SourceError(f"{folder}: {student!r} cannot be a student id here (letters, digits, . _ -)")
            stamp = folder / TIMESTAMP_FILE
            when = None
            if stamp.is_file() and stamp.read_text().strip():
                try:
                    when = parse_timestamp(stamp.read_text())
                except ValueError as exc:
                    raise SourceError(f"{stamp}: {exc}") from None
            found.append(NbgraderSubmission(student=student, folder=folder, timestamp=when))
        return found


def find_course(path: Path) -> NbgraderCourse | None:
    """The nbgrader course ``path`` is in (the nearest folder up holding ``nbgrader_config.py``), if any."""
    for folder in [path.resolve(), *path.resolve().parents]:
        if (folder / CONFIG_FILE).is_file():
            return NbgraderCourse.open(folder)
    return None


def load_any(path: Path | str) -> AssignmentSource:
    """An assignment folder of either kind: one with ``assignment.yaml``, or ``source/<assignment>`` of an nbgrader
    course (found by its ``nbgrader_config.py``)."""
    folder = Path(path).resolve()
    if (folder / ASSIGNMENT_FILE).exists():
        return load_source(folder)
    course = find_course(folder)
    if course is not None and folder.parent == course.source_dir(folder.name).parent:
        return course.load(folder.name)
    return load_source(folder)  # its error names the missing assignment.yaml


@dataclass(frozen=True)
class GradebookCell:
    """One graded cell of a submission in nbgrader's gradebook."""

    auto_score: float | None
    manual_score: float | None
    extra_credit: float | None
    comment: str | None


@dataclass(frozen=True)
class GradebookSubmission:
    """A student's submission of an assignment in nbgrader's gradebook, with its cells' grades by notebook name
    (without ``.ipynb``) and cell name."""

    assignment: str
    student: str
    timestamp: dt.datetime | None
    cells: dict[str, dict[str, GradebookCell]]


def read_gradebook(path: Path) -> list[GradebookSubmission]:
    """Every submission and grade in an nbgrader 0.9 ``gradebook.db`` (read-only)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SourceError(f"{path}: cannot open it: {exc}") from None
    try:
        grades = db.execute(
            # A cell's comment is on its solution cell: another cell of the same name in the same notebook.
            """SELECT a.name, sa.student_id, n.name, bc.name, g.auto_score, g.manual_score, g.extra_credit,
                      (SELECT COALESCE(c.manual_comment, c.auto_comment) FROM comment c
                       JOIN base_cell cc ON c.cell_id = cc.id
                       WHERE c.notebook_id = g.notebook_id AND cc.name = bc.name)
               FROM grade g
               JOIN submitted_notebook sn ON g.notebook_id = sn.id
               JOIN submitted_assignment sa ON sn.assignment_id = sa.id
               JOIN assignment a ON sa.assignment_id = a.id
               JOIN notebook n ON sn.notebook_id = n.id
               JOIN base_cell bc ON g.cell_id = bc.id"""
        ).fetchall()
        submissions = db.execute(
            """SELECT a.name, sa.student_id, sa.timestamp FROM submitted_assignment sa
               JOIN assignment a ON sa.assignment_id = a.id"""
        ).fetchall()
    except sqlite3.Error as exc:
        raise SourceError(f"{path}: not an nbgrader gradebook: {exc}") from None
    finally:
        db.close()
    found: dict[tuple[str, str], GradebookSubmission] = {}
    for assignment, student, stamp, *_ in submissions:
        when = dt.datetime.fromisoformat(str(stamp)).replace(tzinfo=dt.UTC) if stamp else None
        found[(assignment, student)] = GradebookSubmission(assignment, student, when, {})
    for assignment, student, notebook, cell, auto, manual, extra, comment in grades:
        submission = found[(assignment, student)]
        submission.cells.setdefault(notebook, {})[cell] = GradebookCell(
            auto_score=auto, manual_score=manual, extra_credit=extra, comment=comment or None
        )
    return sorted(found.values(), key=lambda s: (s.assignment, s.student))
