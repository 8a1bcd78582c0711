"""An unmodified nbgrader course folder, made by the test in nbgrader 0.9's layout (tests/edu/nbgrader_course_files.py),
through hubfleet: generate (header notebook, code and text stubs from nbgrader_config.py, AUTOTEST and HASHED
AUTOTEST cells), autograde into autograded/, feedback into feedback/, and the per-notebook scores nbgrader 0.9.6
gives the same submissions (its scores below were taken by running nbgrader 0.9.6 on this very course; bench/grading.py
runs both and compares them again). Then a gradebook.db is imported into a hub's exchange. Real sandboxes (root).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import nbformat
import pytest
from typer.testing import CliRunner

from hubfleet.cli.assignment import assignment_app
from hubfleet.db import open_database
from hubfleet.edu.assignments import SourceError
from hubfleet.edu.assignments.nbgrader_config import ConfigError, read_config
from hubfleet.edu.assignments.nbgrader_course import NbgraderCourse, parse_timestamp
from hubfleet.edu.exchange.nbgrader_import import import_course
from hubfleet.edu.exchange.store import Exchange
from tests.edu import nbgrader_course_files as course_files

needs_sandbox = pytest.mark.needs("root", "cgroups", "user_env")

NBGRADER_SCORES = {
    "alice/problems": 9.0,
    "alice/extra": 2.0,
    "bob/problems": 0.0,
    "bob/extra": 0.0,
    "carol/problems": 2.0,
    "carol/extra": 0.0,
    "dave/problems": 2.0,
    "dave/extra": 2.0,
    "erin/problems": 8.0,
    "erin/extra": 1.0,
}
"""``SubmittedNotebook.score`` in nbgrader 0.9.6's gradebook after ``nbgrader generate_assignment ps1`` and
``nbgrader autograde ps1`` on this course (dave uses nbgrader's showtraceback exploit on wrong answers; erin writes
to stderr in a tested function and deleted a test cell)."""


def cli(*args: str) -> str:
    result = CliRunner().invoke(assignment_app, ["nbgrader", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The course, generated, submitted and autograded by hubfleet."""
    root = course_files.write_course(tmp_path_factory.mktemp("gr101"))
    cli("generate", str(root), course_files.ASSIGNMENT)
    course_files.write_submissions(root, root / "release" / course_files.ASSIGNMENT)
    cli("autograde", str(root), course_files.ASSIGNMENT)
    return root


@needs_sandbox
def test_student_version_follows_the_course_config(course: Path) -> None:
    release = course / "release" / course_files.ASSIGNMENT
    problems = nbformat.read(str(release / "problems.ipynb"), as_version=4)
    sources = [cell.source for cell in problems.cells]
    assert sources[0].startswith("**GR101**") and sources[1] == "import math"  # the header notebook's cells first
    text = "\n".join(sources)
    assert "# your answer goes here\n    raise NotImplementedError('answer me')" in text  # ClearSolutions.code_stub
    assert "Your answer, in words:" in text  # ClearSolutions.text_stub
    assert "AUTOTEST" not in text and "HIDDEN" not in text and "area(0)" not in text
    answer = next(c.source for c in problems.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_answer")
    assert 'assert str(type(answer).__name__) == """int"""' in answer and "all checks passed" in answer
    primes = next(c.source for c in problems.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_primes")
    assert primes.count("md5(") == 4 and "[2, 3, 5, 7, 11]" not in primes  # hashed: the answer does not show
    assert (release / "data" / "words.txt").exists() and (release / "extra.ipynb").exists()


@needs_sandbox
def test_scores_are_nbgraders(course: Path) -> None:
    output = cli("scores", str(course), course_files.ASSIGNMENT, "--json")
    scores = {f"{row['student']}/{row['notebook']}": row["score"] for row in map(json.loads, output.splitlines())}
    assert scores == NBGRADER_SCORES
    table = cli("scores", str(course), course_files.ASSIGNMENT)  # as a person reads it
    for key, score in NBGRADER_SCORES.items():
        student, notebook = key.split("/")
        assert f"│ {student} " in table and f"│ {notebook} " in table and f"{score:g} │" in table, table


@needs_sandbox
def test_autograded_and_feedback_in_nbgraders_layout(course: Path) -> None:
    graded = course / "autograded" / "alice" / course_files.ASSIGNMENT
    executed = nbformat.read(str(graded / "problems.ipynb"), as_version=4)
    test_area = next(c for c in executed.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_area")
    assert "area(0) == 0" in test_area.source  # hidden tests ran
    assert not (graded / "timestamp.txt").exists() and (graded / "data" / "words.txt").exists()
    assert "made for 5" in cli("feedback", str(course), course_files.ASSIGNMENT).replace("written for", "made for")
    feedback = course / "feedback" / "carol" / course_files.ASSIGNMENT
    page = (feedback / "problems.html").read_text()
    assert "Score: 0 / 2" in page and "score <b>2 / 10</b>" in page
    assert (feedback / "extra.html").exists() and (feedback / "timestamp.txt").read_text().startswith("2026-11-30")
    again = cli("autograde", str(course), course_files.ASSIGNMENT)
    assert "Graded 0 submission(s)" in again and "5 graded before" in again


@needs_sandbox
def test_what_hubfleet_does_not_understand_is_an_error(tmp_path: Path) -> None:
    root = course_files.write_course(tmp_path / "bad")
    problems = root / "source" / course_files.ASSIGNMENT / "problems.ipynb"
    nb = nbformat.read(str(problems), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("# AUTOTEST answer"))  # not a grade cell
    nbformat.write(nb, str(problems))
    refused = CliRunner().invoke(assignment_app, ["nbgrader", "generate", str(root), course_files.ASSIGNMENT])
    assert refused.exit_code == 1 and "not a grade cell" in " ".join(refused.output.split())
    (root / "autotests.yml").unlink()
    nb.cells[-1].metadata = course_files.meta(grade=True, points=1, grade_id="late_autotest")
    nbformat.write(nb, str(problems))
    refused = CliRunner().invoke(assignment_app, ["nbgrader", "generate", str(root), course_files.ASSIGNMENT])
    assert refused.exit_code == 1 and "autotests.yml" in " ".join(refused.output.split())


def test_config_is_read_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "nbgrader_config.py"
    path.write_text(course_files.CONFIG + "c.OverwriteCells.add_missing_cells = True\n")
    config = read_config(path)
    assert config.format.code_stubs == {"python": "# your answer goes here\nraise NotImplementedError('answer me')"}
    assert config.header == "source/header.ipynb" and config.cell_seconds == 10 and config.add_missing_cells
    assert config.ignored == ["CourseDirectory.course_id", "Exchange.root"]
    for line, error in (
        ("import os\n", "only `c.<Class>.<option> = <value>`"),
        ("c.CourseDirectory.root = os.getcwd()\n", "only literal values"),
        ("c.GenerateAssignment.preprocessors = []\n", "does not implement this option"),
        ("c.ClearSolutions.enforce_metadata = False\n", "always checks"),
        ("c.AssignLatePenalties.plugin_class = 'mine.Plugin'\n", "does not implement"),
    ):
        path.write_text("c = get_config()\n" + line)
        with pytest.raises(ConfigError, match=error):
            read_config(path)
    path.write_text("c = get_config()\nc.ClearSolutions.code_stub = {'R': 'stop()'}\n")
    root = course_files.write_course(tmp_path / "r")
    (root / "nbgrader_config.py").write_text(path.read_text())
    with pytest.raises(SourceError, match="no code stub for the notebook's language 'python'"):
        from hubfleet.edu.assignments import generate

        generate(NbgraderCourse.open(root).load(course_files.ASSIGNMENT), tmp_path / "out")


def test_timestamps_as_nbgrader_writes_them() -> None:
    assert parse_timestamp("2026-11-30 12:00:00.000000 UTC") == dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
    assert parse_timestamp("2015-02-02 14:58:23 America/Los_Angeles").hour == 22
    assert parse_timestamp("2026-01-01T10:00:00+01:00").hour == 9


# --------------------------------------------------------------------------------------------- gradebook.db

GRADEBOOK_SCHEMA = """
CREATE TABLE assignment (id VARCHAR(32) PRIMARY KEY, name VARCHAR(128) UNIQUE NOT NULL, duedate DATETIME,
    course_id VARCHAR(128) NOT NULL);
CREATE TABLE notebook (id VARCHAR(32) PRIMARY KEY, name VARCHAR(128) NOT NULL, assignment_id VARCHAR(32),
    kernelspec VARCHAR(1024));
CREATE TABLE student (id VARCHAR(128) PRIMARY KEY, first_name VARCHAR(128), last_name VARCHAR(128),
    email VARCHAR(128), lms_user_id VARCHAR(128));
CREATE TABLE submitted_assignment (id VARCHAR(32) PRIMARY KEY, assignment_id VARCHAR(32), student_id VARCHAR(128),
    timestamp DATETIME, extension DATETIME);
CREATE TABLE submitted_notebook (id VARCHAR(32) PRIMARY KEY, assignment_id VARCHAR(32), notebook_id VARCHAR(32),
    flagged BOOLEAN, late_submission_penalty FLOAT);
CREATE TABLE base_cell (id VARCHAR(32) PRIMARY KEY, name VARCHAR(128) NOT NULL, notebook_id VARCHAR(32) NOT NULL,
    type VARCHAR(50));
CREATE TABLE grade (id VARCHAR(32) PRIMARY KEY, notebook_id VARCHAR(32), cell_id VARCHAR(32), auto_score FLOAT,
    manual_score FLOAT, extra_credit FLOAT, needs_manual_grade BOOLEAN NOT NULL);
CREATE TABLE comment (id VARCHAR(32) PRIMARY KEY, notebook_id VARCHAR(32), cell_id VARCHAR(32), auto_comment TEXT,
    manual_comment TEXT);
"""
"""The tables of nbgrader 0.9's gradebook that an import reads (written here from its documented schema)."""


def write_gradebook(path: Path) -> None:
    """Two graded students of ps1: alice (all auto scores, a manual score with extra credit for her written answer),
    carol (one auto score overridden by a grader, with a comment)."""
    db = sqlite3.connect(path)
    db.executescript(GRADEBOOK_SCHEMA)
    db.execute("INSERT INTO assignment VALUES ('a1', 'ps1', '2026-12-01 12:00:00', 'gr101')")
    db.executemany("INSERT INTO notebook VALUES (?, ?, 'a1', '{}')", [("n1", "problems"), ("n2", "extra")])
    cells = {"test_area": "n1", "test_count": "n1", "explain": "n1", "test_shout": "n2"}
    db.executemany("INSERT INTO base_cell VALUES (?, ?, ?, 'GradeCell')", [(c, c, n) for c, n in cells.items()])
    db.execute("INSERT INTO base_cell VALUES ('s_explain', 'explain', 'n1', 'SolutionCell')")
    rows = {
        "alice": {"test_area": (2, None, None), "test_count": (1, None, None), "explain": (None, 1, 0.5)},
        "carol": {"test_area": (0, 1.5, None), "test_count": (1, None, None), "test_shout": (0, None, None)},
    }
    for student, grades in rows.items():
        db.execute("INSERT INTO student (id) VALUES (?)", (student,))
        db.execute(
            "INSERT INTO submitted_assignment VALUES (?, 'a1', ?, '2026-11-30 12:00:00', NULL)",
            (f"sa-{student}", student),
        )
        for notebook in ("n1", "n2"):
            db.execute(
                "INSERT INTO submitted_notebook VALUES (?, ?, ?, 0, NULL)",
                (f"sn-{student}-{notebook}", f"sa-{student}", notebook),
            )
        for cell, (auto, manual, extra) in grades.items():
            sn = f"sn-{student}-{cells[cell]}"
            db.execute(
                "INSERT INTO grade VALUES (?, ?, ?, ?, ?, ?, 0)", (f"g-{student}-{cell}", sn, cell, auto, manual, extra)
            )
    db.execute("INSERT INTO comment VALUES ('c1', 'sn-carol-n1', 'test_area', NULL, 'close: use math.pi')")
    db.commit()
    db.close()


@needs_sandbox
def test_gradebook_import_into_a_hubs_exchange(tmp_path: Path) -> None:
    root = course_files.write_course(tmp_path / "gr101")
    course_files.write_submissions(root, _release(root, tmp_path))
    write_gradebook(root / "gradebook.db")
    exchange = Exchange(open_database(f"sqlite:///{tmp_path / 'fleet.sqlite'}"), "gr-hub")
    report = import_course(exchange, "gr101", NbgraderCourse.open(root), by="prof", max_bytes=20 * 2**20)
    assert report.released == ["ps1"] and report.submissions == 2 and report.capped == 1
    assignment = exchange.assignment("gr101", "ps1")
    assert assignment.due == dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC) and assignment.max_score == 12
    rows = {row.student: row for row in exchange.gradebook("gr101", "ps1")}
    assert rows["alice"].cells == {
        "problems.ipynb:test_area": 2,
        "problems.ipynb:test_count": 1,
        "problems.ipynb:explain": 1,  # manual 1 + 0.5 extra credit, capped at the cell's point
    }
    assert rows["carol"].total == 2.5 and rows["carol"].submitted_at == dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
    files = exchange.submission_files(rows["carol"].submission_id)
    assert set(files) == {"problems.ipynb", "extra.ipynb", "data/words.txt"}  # from submitted/ (no timestamp.txt)
    grades = {g.cell: g for g in exchange.grades(rows["carol"].submission_id)}
    assert grades["test_area"].comment == "close: use math.pi" and grades["test_area"].score == 1.5
    again = import_course(exchange, "gr101", NbgraderCourse.open(root), by="prof", max_bytes=20 * 2**20)
    assert again.submissions == 0 and again.already == 2


def _release(root: Path, tmp_path: Path) -> Path:
    from hubfleet.edu.assignments import generate
    from hubfleet.edu.assignments.autotest import sandbox_session

    source = NbgraderCourse.open(root).load(course_files.ASSIGNMENT)
    generate(source, tmp_path / "release", autotests=sandbox_session(source.root))
    return tmp_path / "release"
