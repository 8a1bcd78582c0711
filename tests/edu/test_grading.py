"""Assignments and the sandboxed autograder: nbgrader's format and checksums, generate, scores, adversarial
submissions, isolation, and resuming a killed batch. Real sandboxes (root, cgroups, namespaces, the user env)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from hubfleet.edu.assignments import (
    GradeResult,
    GradingSpec,
    JournalSink,
    LatePolicy,
    SandboxLimits,
    SourceError,
    Submission,
    generate,
    grade_batch,
    late_penalty,
    load_source,
)
from hubfleet.edu.assignments import nbgrader_format as fmt

pytestmark = pytest.mark.needs("root", "cgroups", "user_env")

LIMITS = SandboxLimits(cell_seconds=2.0, notebook_seconds=15.0, memory_bytes=256 * 2**20, pids=64)


def meta(**nbgrader: object) -> dict[str, object]:
    return {"nbgrader": {"schema_version": 3, **nbgrader}}


SOLUTION_SQUARE = "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION"
TEST_SQUARE = "assert square(2) == 4\n### BEGIN HIDDEN TESTS\nassert square(3) == 9\n### END HIDDEN TESTS"


def source_notebook() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            new_markdown_cell("# Homework 1"),
            new_code_cell("import math", metadata=meta(locked=True, grade=False, solution=False, grade_id="setup")),
            new_code_cell(SOLUTION_SQUARE, metadata=meta(solution=True, grade=False, locked=False, grade_id="square")),
            new_code_cell(
                TEST_SQUARE, metadata=meta(grade=True, solution=False, locked=False, points=2, grade_id="t1")
            ),
            new_code_cell(
                "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION",
                metadata=meta(solution=True, grade=False, locked=False, grade_id="add"),
            ),
            new_code_cell("assert add(1, 2) == 3", metadata=meta(grade=True, solution=False, points=1, grade_id="t2")),
            new_markdown_cell(
                "### BEGIN SOLUTION\nBecause.\n### END SOLUTION",
                metadata=meta(grade=True, solution=True, locked=False, points=1, grade_id="explain"),
            ),
        ],
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}},
    )


@pytest.fixture(scope="module")
def assignment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, GradingSpec]:
    """(source folder, student version, spec) of a one-notebook assignment with a data file."""
    root = tmp_path_factory.mktemp("assignment")
    source = root / "source"
    source.mkdir()
    (source / "assignment.yaml").write_text(
        "name: hw1\ntitle: Homework 1\ndue: 2026-12-01T23:59:00+01:00\n"
        "late_policy: {penalty_per_day: 0.25, max_days_late: 2}\n"
    )
    nbformat.write(source_notebook(), str(source / "hw.ipynb"))
    (source / "data").mkdir()
    (source / "data" / "numbers.csv").write_text("1,2,3\n")
    spec = generate(load_source(source), root / "release")
    return source, root / "release", spec


def submit(release: Path, folder: Path, answers: dict[str, str], edit: dict[str, str] | None = None) -> Path:
    """A student's submission: the student version with the solution cells (and ``edit`` cells) replaced."""
    nb = nbformat.read(str(release / "hw.ipynb"), as_version=4)
    for cell in nb.cells:
        gid = fmt.grade_id(cell)
        if gid in answers:
            cell.source = answers[gid]
        if edit and gid in edit:
            if edit[gid] == "<delete>":
                cell.metadata["delete"] = True
            else:
                cell.source = edit[gid]
    nb.cells = [c for c in nb.cells if not c.metadata.get("delete")]
    folder.mkdir(parents=True)
    nbformat.write(nb, str(folder / "hw.ipynb"))
    (folder / "data").mkdir()
    (folder / "data" / "numbers.csv").write_text("1,2,3\n")
    return folder


CORRECT = {"square": "def square(x):\n    return x * x", "add": "def add(a, b):\n    return a + b"}


def scores(result: GradeResult) -> dict[str, tuple[float | None, str]]:
    return {c.grade_id: (c.points, c.status) for c in result.notebooks["hw.ipynb"]}


# --------------------------------------------------------------------------------------------- format


def test_checksums_match_nbgrader() -> None:
    """Vectors computed with nbgrader 0.9.6's own utils.compute_checksum (in /opt/hubfleet/bench-nbgrader)."""
    cells = [
        new_code_cell(
            TEST_SQUARE, metadata=meta(grade=True, solution=False, locked=False, points=2, grade_id="test_square")
        ),
        new_code_cell(
            "def f():\n    # YOUR CODE HERE\n    raise NotImplementedError()",
            metadata=meta(grade=False, solution=True, locked=False, grade_id="f"),
        ),
        new_markdown_cell(
            "Explain ünïcode ✓", metadata=meta(grade=True, solution=True, points=1.5, grade_id="explain")
        ),
        new_code_cell("import math", metadata=meta(locked=True, grade_id="setup")),
        new_markdown_cell("Task", metadata=meta(task=True, points=3, grade_id="task1", locked=True)),
    ]
    expected = [
        "345c04ff59eb82ae5358db46f889d970",
        "0a3725aa0e9c28105b62afcb99cf50b9",
        "53c9e9e03de629b6b334a0c62f8707f3",
        "76a1143c4a7f7712ec8fa33fcab264d6",
        "9cb6bd2400985b60585ce6cbf712d62e",
    ]
    assert [fmt.compute_checksum(c) for c in cells] == expected


def test_markers_and_stubs() -> None:
    cell = new_code_cell(SOLUTION_SQUARE, metadata=meta(solution=True, grade_id="s"))
    assert fmt.replace_solutions(cell) == "def square(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    whole = new_code_cell("x = 1", metadata=meta(solution=True, grade_id="s"))
    assert fmt.replace_solutions(whole) == fmt.CODE_STUB
    text = new_markdown_cell(
        "### BEGIN SOLUTION\nBecause.\n### END SOLUTION", metadata=meta(solution=True, grade_id="e")
    )
    assert fmt.replace_solutions(text) == fmt.TEXT_STUB
    test = new_code_cell(TEST_SQUARE, metadata=meta(grade=True, points=1, grade_id="t"))
    assert fmt.remove_hidden_tests(test) == "assert square(2) == 4"
    with pytest.raises(fmt.FormatError, match="not a solution cell"):
        fmt.replace_solutions(new_code_cell("### BEGIN SOLUTION\n### END SOLUTION"))
    with pytest.raises(fmt.FormatError, match="without a matching"):
        fmt.remove_hidden_tests(new_code_cell("### BEGIN HIDDEN TESTS", metadata=meta(grade=True, grade_id="t")))


def test_nbgrader_scoring_rules() -> None:
    cell = new_code_cell("x", metadata=meta(grade=True, solution=False, points=4, grade_id="t"))
    assert fmt.determine_grade(cell, [], None) == (4.0, 4.0)
    stderr = [{"output_type": "stream", "name": "stderr", "text": "careful"}]
    assert fmt.determine_grade(cell, stderr, None) == (0.0, 4.0)
    partial = [{"output_type": "execute_result", "data": {"text/plain": "1.5"}}]
    assert fmt.determine_grade(cell, partial, None) == (1.5, 4.0)
    other = [{"output_type": "execute_result", "data": {"text/plain": "'yes'"}}]
    assert fmt.determine_grade(cell, other, None) == (4.0, 4.0)


def test_generate(assignment: tuple[Path, Path, GradingSpec]) -> None:
    _, release, spec = assignment
    student = nbformat.read(str(release / "hw.ipynb"), as_version=4)
    text = "\n".join(c.source for c in student.cells)
    assert "HIDDEN" not in text and "square(3)" not in text and "return x * x" not in text
    assert "raise NotImplementedError()" in text and "YOUR ANSWER HERE" in text
    assert (release / "data" / "numbers.csv").read_text() == "1,2,3\n"
    for cell in student.cells:
        if fmt.has_nbgrader(cell):
            assert cell.metadata.nbgrader["checksum"] == fmt.compute_checksum(cell)
    by_id = {c.grade_id: c for nb in spec.notebooks for c in nb.cells}
    assert "assert square(3) == 9" in by_id["t1"].source
    assert by_id["t1"].checksum != by_id["t1"].student_checksum
    assert spec.max_total == 4.0 and spec.assignment == "hw1" and spec.data_files == ("data/numbers.csv",)
    assert GradingSpec.loads(spec.dumps()) == spec
    assert not (release / "assignment.yaml").exists()


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"assignment\.yaml: missing"):
        load_source(tmp_path)
    (tmp_path / "assignment.yaml").write_text("name: hw1\ntitle: t\ndue: 2026-12-01T23:59:00\n")
    with pytest.raises(SourceError, match=r"assignment\.yaml: due: .*time zone"):
        load_source(tmp_path)
    (tmp_path / "assignment.yaml").write_text("name: hw1\ntitle: t\n")
    with pytest.raises(SourceError, match="no notebook"):
        load_source(tmp_path)
    nbformat.write(
        new_notebook(cells=[new_code_cell("### BEGIN SOLUTION\n1\n### END SOLUTION")]), str(tmp_path / "a.ipynb")
    )
    with pytest.raises(SourceError, match=r"a\.ipynb, cell 1: a solution region"):
        generate(load_source(tmp_path), tmp_path / "out")


def test_late_penalty() -> None:
    due = dt.datetime(2026, 12, 1, 23, 59, tzinfo=dt.UTC)
    policy = LatePolicy(penalty_per_day=0.25, max_days_late=2)
    assert late_penalty(policy, due, due) == 1.0
    assert late_penalty(policy, due, due + dt.timedelta(hours=1)) == 0.75
    assert late_penalty(policy, due, due + dt.timedelta(days=1, hours=1)) == 0.5
    assert late_penalty(policy, due, due + dt.timedelta(days=3)) == 0.0
    assert late_penalty(None, due, due + dt.timedelta(days=30)) == 1.0


# --------------------------------------------------------------------------------------------- grading


@pytest.fixture(scope="module")
def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def adversarial(port: int, other: Path) -> dict[str, dict[str, str]]:
    """Solution cells of misbehaving submissions, by id; each defines `square` (and `add`) somehow."""
    add = CORRECT["add"]
    probe = textwrap.dedent(
        f"""
        import glob
        readable = []
        work = '/var/lib/hubfleet/grading'
        for path in [{str(other)!r}] + glob.glob(work + '/w*/*') + glob.glob(work + '/*.log'):
            try:
                open(path, 'rb').read(1)
                readable.append(path)
            except OSError:
                pass
        def square(x):
            assert not readable, readable
            return x * x
        """
    )
    network = textwrap.dedent(
        f"""
        import socket
        try:
            socket.create_connection(('127.0.0.1', {port}), timeout=1).close()
            reached = True
        except OSError:
            reached = False
        def square(x):
            assert not reached, 'the network is reachable'
            return x * x
        """
    )
    return {
        "loop": {"square": "def square(x):\n    while True:\n        pass", "add": add},
        "forkbomb": {"square": "import os\nwhile True:\n    os.fork()", "add": add},
        "membomb": {"square": "hog = bytearray(1024 * 2**20)\ndef square(x):\n    return x * x", "add": add},
        "sysexit": {"square": "import sys\nsys.exit(1)\ndef square(x):\n    return x * x", "add": add},
        "osexit": {"square": "import os\nos._exit(0)", "add": add},
        "segfault": {"square": "import ctypes\nctypes.string_at(0)", "add": add},
        "snoop": {"square": probe, "add": add},
        "network": {"square": network, "add": add},
    }


@pytest.fixture(scope="module")
def batch(
    assignment: tuple[Path, Path, GradingSpec], tmp_path_factory: pytest.TempPathFactory, listener: socket.socket
) -> Iterator[dict[str, GradeResult]]:
    """One batch of every kind of submission, graded by 2 workers.

    The submissions live outside /tmp (which every sandbox gets a private copy of) and are world-readable, so
    only the sandbox's empty mount over their folder keeps one submission from reading another.
    """
    _, release, spec = assignment
    root = Path(tempfile.mkdtemp(prefix="hubfleet-test-grading-", dir="/var/lib"))
    try:
        yield grade_everything(release, spec, root, listener, tmp_path_factory.mktemp("graded"))
    finally:
        shutil.rmtree(root)


def grade_everything(
    release: Path, spec: GradingSpec, root: Path, listener: socket.socket, graded: Path
) -> dict[str, GradeResult]:
    subs = {
        "correct": CORRECT,
        "partly": {"square": "def square(x):\n    return x * 2", "add": CORRECT["add"]},
        "erroring": {"square": "def square(x):\n    return 1 / 0", "add": "def add(a, b):\n    raise ValueError('no')"},
        "untouched": {},
        **adversarial(listener.getsockname()[1], root / "correct" / "hw.ipynb"),
    }
    submissions = [Submission(id=name, folder=submit(release, root / name, answers)) for name, answers in subs.items()]
    altered = submit(release, root / "altered", CORRECT, edit={"t1": "pass  # tests? what tests?", "t2": "<delete>"})
    submissions.append(Submission(id="altered", folder=altered))
    (root / "empty").mkdir()
    submissions.append(Submission(id="empty", folder=root / "empty"))
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    results: dict[str, GradeResult] = {}
    summary = grade_batch(
        spec,
        submissions,
        workers=2,
        limits=LIMITS,
        graded_root=graded,
        on_result=lambda r: results.__setitem__(r.submission_id, r),
    )
    assert summary.graded == len(submissions) and summary.workers == 2
    return results


def test_scores_of_well_behaved_submissions(batch: dict[str, GradeResult]) -> None:
    correct = batch["correct"]
    assert scores(correct) == {"t1": (2.0, "passed"), "t2": (1.0, "passed"), "explain": (0.0, "manual")}
    assert correct.total == 3.0 and correct.max_total == 4.0 and not correct.errors
    partly = scores(batch["partly"])
    assert partly["t1"] == (0.0, "failed") and partly["t2"] == (1.0, "passed")
    erroring = batch["erroring"].notebooks["hw.ipynb"]
    assert [(c.points, c.status) for c in erroring[:2]] == [(0.0, "error"), (0.0, "error")]
    assert erroring[0].message == "ZeroDivisionError: division by zero"
    untouched = scores(batch["untouched"])
    assert untouched["t1"] == (0.0, "error") and untouched["explain"] == (0.0, "manual")


def test_graded_notebooks_are_kept(batch: dict[str, GradeResult]) -> None:
    folder = batch["correct"].graded_folder
    assert folder is not None and folder.stat().st_uid == 0
    nb = nbformat.read(str(folder / "hw.ipynb"), as_version=4)
    test_cell = next(c for c in nb.cells if fmt.grade_id(c) == "t1")
    assert "assert square(3) == 9" in test_cell.source  # the hidden tests ran
    assert (folder / "data" / "numbers.csv").exists()


def test_altered_and_deleted_test_cells_are_restored(batch: dict[str, GradeResult]) -> None:
    result = scores(batch["altered"])
    assert result["t1"] == (2.0, "altered-restored") and result["t2"] == (1.0, "altered-restored")


def test_missing_notebook_scores_zero(batch: dict[str, GradeResult]) -> None:
    result = batch["empty"]
    assert result.total == 0.0 and any("missing" in e for e in result.errors)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("loop", "timeout"),
        ("forkbomb", None),  # an error when fork fails at the process limit, or a timeout: both contained
        ("membomb", None),
        ("sysexit", "error"),
        ("osexit", "not-run"),
        ("segfault", "not-run"),
    ],
)
def test_misbehaving_submissions_are_contained_and_scored(
    batch: dict[str, GradeResult], name: str, status: str | None
) -> None:
    result = batch[name]
    t1 = next(c for c in result.notebooks["hw.ipynb"] if c.grade_id == "t1")
    assert t1.points == 0.0
    if status is not None:
        assert t1.status == status
    if name in ("loop", "sysexit"):  # the notebook went on after the bad cell
        assert scores(result)["t2"] == (1.0, "passed")
    if name in ("osexit", "segfault", "membomb"):  # the notebook's process died: said at the submission level
        assert result.errors


def test_no_network_and_no_other_files(batch: dict[str, GradeResult]) -> None:
    assert scores(batch["network"])["t1"] == (2.0, "passed"), batch["network"].notebooks
    assert scores(batch["snoop"])["t1"] == (2.0, "passed"), batch["snoop"].notebooks


def test_globals_and_modules_do_not_leak(assignment: tuple[Path, Path, GradingSpec], tmp_path: Path) -> None:
    _, release, spec = assignment
    first = {"square": "import math\nmath.pi = 3\nLEAK = 42\ndef square(x):\n    return x * x", "add": CORRECT["add"]}
    second = {
        "square": "import math\nassert math.pi > 3.14\nassert 'LEAK' not in globals()\n" + CORRECT["square"],
        "add": CORRECT["add"],
    }
    subs = [Submission(id=n, folder=submit(release, tmp_path / n, a)) for n, a in (("a", first), ("b", second))]
    results: list[GradeResult] = []
    grade_batch(spec, subs, workers=1, limits=LIMITS, on_result=results.append)
    assert [r.submission_id for r in results] == ["a", "b"]
    assert scores(results[1])["t1"] == (2.0, "passed"), results[1].notebooks


def test_skip_and_journal(assignment: tuple[Path, Path, GradingSpec], tmp_path: Path) -> None:
    _, release, spec = assignment
    subs = [Submission(id=n, folder=submit(release, tmp_path / n, CORRECT)) for n in ("x", "y")]
    with JournalSink(tmp_path / "journal.jsonl") as journal:
        summary = grade_batch(spec, subs, workers=1, limits=LIMITS, skip={"x"}, on_result=journal)
        assert (summary.graded, summary.skipped) == (1, 1)
        assert journal.done_ids() == {"y"}
    with open(tmp_path / "journal.jsonl", "ab") as f:
        f.write(b'{"submission_id": "torn')
    assert JournalSink(tmp_path / "journal.jsonl").done_ids() == {"y"}
    assert (tmp_path / "journal.jsonl").read_bytes().endswith(b"}\n")


def test_resume_after_the_grader_is_killed(assignment: tuple[Path, Path, GradingSpec], tmp_path: Path) -> None:
    source, release, _ = assignment
    slow = {"square": "import time\ntime.sleep(0.3)\n" + CORRECT["square"], "add": CORRECT["add"]}
    ids = [f"s{i:02d}" for i in range(12)]
    for name in ids:
        submit(release, tmp_path / "subs" / name, slow)
    journal = tmp_path / "journal.jsonl"
    command = [sys.executable, "-m", "hubfleet", "assignment", "autograde", str(source), str(tmp_path / "subs")]
    command += ["--journal", str(journal), "--workers", "1"]
    env = {**os.environ, "COLUMNS": "120"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not journal.exists() or journal.read_bytes().count(b"\n") < 3):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = journal.read_bytes().count(b"\n")
    assert 3 <= first < len(ids)
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"skipped {first}" in rerun.stdout
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sorted(line["submission_id"] for line in lines) == ids
    assert all(line["total"] == 3.0 for line in lines)


def test_cli_generate_then_autograde_with_the_spec(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hubfleet.cli.assignment import SPEC_FILE, assignment_app

    source = tmp_path / "source"
    source.mkdir()
    (source / "assignment.yaml").write_text("name: hw1\ntitle: Homework 1\n")
    nbformat.write(source_notebook(), str(source / "hw.ipynb"))
    runner = CliRunner()
    generated = runner.invoke(assignment_app, ["generate", str(source), str(tmp_path / "release")])
    assert generated.exit_code == 0, generated.output
    spec_file = source / SPEC_FILE
    assert spec_file.stat().st_mode & 0o777 == 0o600
    submit(tmp_path / "release", tmp_path / "subs" / "alice", CORRECT)
    journal = tmp_path / "grades.jsonl"
    args = ["autograde", str(spec_file), str(tmp_path / "subs"), "--journal", str(journal), "--cell-timeout", "5"]
    graded = runner.invoke(assignment_app, args)
    assert graded.exit_code == 0, graded.output
    assert "Graded 1 submission(s)" in graded.output
    (result,) = JournalSink(journal).results()
    assert result.total == 3.0 and (tmp_path / "grades.jsonl.graded" / "alice" / "hw.ipynb").exists()
    again = runner.invoke(assignment_app, args)
    assert "Graded 0 submission(s)" in again.output and "skipped 1" in again.output
    refused = runner.invoke(assignment_app, ["generate", str(tmp_path / "nowhere"), str(tmp_path / "out")])
    assert refused.exit_code == 1 and "not a folder" in refused.output
