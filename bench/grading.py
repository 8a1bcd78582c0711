"""Autograding: hubfleet against nbgrader 0.9.6 in one run — batches, single-submission feedback, nbgrader courses.

Usage (as root, from the repository root):

    .venv/bin/python bench/grading.py [--submissions 200] [--rounds 3] [--singles 30] [--out bench/results/grading.json]

1. **Batches** of 1, 10 and 200 submissions (`--submissions`) of a 10-question nbgrader-format assignment, in a
   fixed repeating mix: correct, partly wrong, erroring, slow (a 0.5 s sleep), looping (its test cell times out)
   and memory-hungry (800 MiB). hubfleet grades each batch with `grade_batch` (its default of two sandboxes per
   core, forkservers started by the call: a cold start, as a CLI run), nbgrader 0.9.6 with `nbgrader autograde
   --force` (serial, a kernel per submission) from its own virtualenv (/opt/hubfleet/bench-nbgrader, built from
   /usr/bin/python3 with `pip install nbgrader==0.9.6` if missing; never in hubfleet's environment). The two
   alternate run by run (`--rounds` of 1 and 10, one of 200); ratio = nbgrader's median seconds / hubfleet's.
   Both use a 5 s cell timeout. Every well-behaved submission (correct, partly wrong, erroring, slow) of the 200
   must get the same score on every cell from both.
2. **Single submission → visible-test feedback**: a real one-hub fleet (courses, the exchange service), the
   assignment released with instant feedback; `--singles` students each submit a correct notebook through the
   REST API and poll for the check; latency = from the POST to the check's results (the first one, which starts
   the warm grader, is reported apart). Baselines, alternating with it: nbgrader 0.9.6's `nbgrader validate` of
   the same notebook (the student-side check of visible tests) and `nbgrader autograde --student` of one
   submission.
3. **An nbgrader course as it is** (tests/edu/nbgrader_course_files.py: a header notebook, code and text stubs
   from nbgrader_config.py, AUTOTEST and HASHED AUTOTEST cells): generated and autograded by both; every
   per-notebook score must agree.

Top-level keys of the results file: `single_p50_s`, `single_p95_s`, `batch_ratio_1`, `batch_ratio_10`,
`batch_ratio_200`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import nbformat
from common import (
    BenchError,
    log,
    log_table_header,
    machine_info,
    prepare,
    run_hubfleet,
    run_in_workdir,
    running_fleet,
    summary,
    write_results,
)
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from hubfleet.edu.assignments import (
    GradeResult,
    GradingSpec,
    SandboxLimits,
    Submission,
    generate,
    grade_batch,
    load_source,
)
from hubfleet.edu.assignments.sandbox import DEFAULT_PYTHON
from tests.edu import sources

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "grading.json"
NBGRADER_VENV = Path("/opt/hubfleet/bench-nbgrader")
NBGRADER_VERSION = "0.9.6"
CELL_TIMEOUT = 5.0
ASSIGNMENT = "hw1"
NOTEBOOK = "hw.ipynb"
MIX = ["correct", "partly", "correct", "erroring", "correct", "slow", "partly", "correct", "looping", "correct"]
MIX += ["partly", "erroring", "correct", "memory", "correct", "partly", "slow", "correct", "erroring", "correct"]
WELL_BEHAVED = {"correct", "partly", "erroring", "slow"}
LIMITS = SandboxLimits(cell_seconds=CELL_TIMEOUT, notebook_seconds=120.0, memory_bytes=512 * 2**20, pids=128)
METHOD = [
    "one nbgrader-format source notebook: 10 autograded questions (solution cell + test cell with hidden tests,"
    " 1 or 2 points), a locked set-up cell, a data file, one manually graded markdown answer",
    "corpus: the student version with the solution cells filled in, in a repeating mix of 20: 9 correct, 4 partly"
    " wrong (3 wrong answers), 3 erroring (2 raising answers), 2 slow (0.5 s sleep), 1 looping (an infinite"
    " loop: its test cell times out), 1 memory-hungry (800 MiB)",
    "batches of 1, 10 and N (the first submissions of the corpus): hubfleet grade_batch (default workers: two per"
    " core; 5 s per cell, 512 MiB and 128 processes per sandbox; the forkservers start in the call) and nbgrader"
    " 0.9.6 `nbgrader autograde hw1 --force` (serial, --Execute.timeout=5, own virtualenv; generate_assignment not"
    " timed), alternating run by run; ratio = median nbgrader seconds / median hubfleet seconds",
    "scores: every autograded cell of every well-behaved submission of the batch of N must score the same in both",
    "single: a real one-hub fleet; the assignment released with --instant-feedback; each of S students POSTs a"
    " correct submission to the exchange and polls GET .../check every 20 ms; latency = POST to results (the first,"
    " which starts the grader, apart); alternating with nbgrader 0.9.6 `nbgrader validate` of the same notebook and"
    " `nbgrader autograde hw1 --student one --force`",
    "nbgrader course: tests/edu/nbgrader_course_files.py generated and autograded by both; per-notebook scores"
    " compared",
]


@dataclass(frozen=True)
class Question:
    name: str
    points: int
    solution: str
    test: str
    hidden: str
    wrong: str
    error: str


QUESTIONS = [
    Question("square", 1, "def square(x):\n    return x * x", "assert square(3) == 9", "assert square(-2) == 4",
             "def square(x):\n    return x * 2", "def square(x):\n    return x / 0"),
    Question("add3", 2, "def add3(a, b, c):\n    return a + b + c", "assert add3(1, 2, 3) == 6",
             "assert add3(0, 0, -1) == -1", "def add3(a, b, c):\n    return a + b",
             "def add3(a, b, c):\n    return a + b + undefined_name"),
    Question("factorial", 1,
             "def factorial(n):\n    result = 1\n    for k in range(2, n + 1):\n        result *= k\n    return result",
             "assert factorial(5) == 120", "assert factorial(0) == 1",
             "def factorial(n):\n    return n * (n - 1)", "def factorial(n):\n    raise RuntimeError('todo')"),
    Question("is_prime", 2, "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))",
             "assert is_prime(7) and not is_prime(8)", "assert not is_prime(1) and is_prime(97)",
             "def is_prime(n):\n    return n % 2 == 1", "def is_prime(n):\n    return n.is_prime()"),
    Question("reverse_words", 1, "def reverse_words(s):\n    return ' '.join(reversed(s.split()))",
             "assert reverse_words('a b c') == 'c b a'", "assert reverse_words('') == ''",
             "def reverse_words(s):\n    return s[::-1]", "def reverse_words(s):\n    return reversed(s).join()"),
    Question("column_total", 2,
             "def column_total(path):\n    with open(path) as f:\n"
             "        return sum(int(line.split(',')[1]) for line in f if line.strip())",
             "assert column_total('data/values.csv') == 60", "assert column_total('data/values.csv') > 0",
             "def column_total(path):\n    return 0", "def column_total(path):\n    return open('missing.csv').read()"),
    Question("fib", 1, "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
             "assert fib(10) == 55", "assert [fib(i) for i in range(5)] == [0, 1, 1, 2, 3]",
             "def fib(n):\n    return n", "def fib(n):\n    return [][n]"),
    Question("count_vowels", 2, "def count_vowels(s):\n    return sum(ch in 'aeiou' for ch in s.lower())",
             "assert count_vowels('banana') == 3", "assert count_vowels('AEIOUxyz') == 5",
             "def count_vowels(s):\n    return len(s)", "def count_vowels(s):\n    return s.count()"),
    Question("flatten", 1, "def flatten(lists):\n    return [x for sub in lists for x in sub]",
             "assert flatten([[1, 2], [3]]) == [1, 2, 3]", "assert flatten([]) == []",
             "def flatten(lists):\n    return lists[0]", "def flatten(lists):\n    return sum(lists)"),
    Question("word_freq", 2,
             "def word_freq(text):\n    counts = {}\n    for w in text.lower().split():\n"
             "        counts[w] = counts.get(w, 0) + 1\n    return counts",
             "assert word_freq('a b a') == {'a': 2, 'b': 1}", "assert word_freq('') == {}",
             "def word_freq(text):\n    return {}", "def word_freq(text):\n    return text.split().count()"),
]  # fmt: skip


def write_source(folder: Path) -> None:
    """The assignment's source folder, readable by both graders (nbgrader ignores assignment.yaml)."""
    cells = [
        new_markdown_cell("# Homework 1\n\nTen small functions; each has visible and hidden tests."),
        new_code_cell("import math\nimport os", metadata=sources.nbgrader(locked=True, grade_id="setup")),
    ]
    for q in QUESTIONS:
        cells += [
            new_markdown_cell(f"**{q.name}** ({q.points} point{'s' if q.points > 1 else ''})"),
            sources.solution_cell(q.name, q.solution),
            sources.graded_cell(f"test_{q.name}", q.points, q.test, q.hidden),
        ]
    cells.append(
        new_markdown_cell(
            "### BEGIN SOLUTION\nBecause sums are linear.\n### END SOLUTION",
            metadata=sources.nbgrader(grade=True, solution=True, points=2, grade_id="explain"),
        )
    )
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True)
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), str(folder / NOTEBOOK))
    (folder / "data").mkdir()
    (folder / "data" / "values.csv").write_text("a,10\nb,20\nc,30\n")
    (folder / "assignment.yaml").write_text(f"name: {ASSIGNMENT}\ntitle: Homework 1\n")


def answers_for(kind: str, rng: random.Random) -> dict[str, str]:
    """Solution cell sources (by grade_id) of one submission of the given kind."""
    answers = {q.name: q.solution for q in QUESTIONS}
    chosen = rng.sample(QUESTIONS, 3)
    if kind == "partly":
        answers.update({q.name: q.wrong for q in chosen})
    elif kind == "erroring":
        answers.update({q.name: q.error for q in chosen[:2]})
    elif kind == "slow":
        answers[chosen[0].name] = "import time\ntime.sleep(0.5)\n" + chosen[0].solution
    elif kind == "looping":
        header = chosen[0].solution.split("\n", 1)[0]
        answers[chosen[0].name] = f"{header}\n    while True:\n        pass"
    elif kind == "memory":
        answers[chosen[0].name] = "hog = bytearray(800 * 2**20)\n" + chosen[0].solution
    return answers


def write_corpus(release: Path, submitted: Path, count: int) -> dict[str, str]:
    """`count` submissions as nbgrader lays them out (submitted/<student>/hw1/); returns student -> kind."""
    rng = random.Random(20261127)
    student_nb = nbformat.read(str(release / NOTEBOOK), as_version=4)
    kinds = {}
    for index in range(count):
        student = f"s{index:04d}"
        kind = MIX[index % len(MIX)]
        answers = answers_for(kind, rng)
        nb = nbformat.from_dict(json.loads(json.dumps(student_nb)))
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id in answers:
                cell.source = answers[grade_id]
        folder = submitted / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, str(folder / NOTEBOOK))
        shutil.copytree(release / "data", folder / "data")
        kinds[student] = kind
    return kinds


# --------------------------------------------------------------------------------------------- nbgrader


def ensure_nbgrader() -> str:
    """nbgrader 0.9.6 in its own virtualenv (built once); returns its version."""
    nbgrader = NBGRADER_VENV / "bin" / "nbgrader"
    if not nbgrader.exists():
        log(f"nbgrader: installing nbgrader=={NBGRADER_VERSION} into {NBGRADER_VENV} (once)")
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(NBGRADER_VENV)], check=True)
        pip = [str(NBGRADER_VENV / "bin" / "pip"), "install", "-q", f"nbgrader=={NBGRADER_VERSION}"]
        subprocess.run(pip, check=True)
    python = str(NBGRADER_VENV / "bin" / "python")
    version = subprocess.run(
        [python, "-c", "import nbgrader; print(nbgrader.__version__)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if version != NBGRADER_VERSION:
        raise BenchError(f"{NBGRADER_VENV} has nbgrader {version}, not {NBGRADER_VERSION}")
    return version


NBGRADER_SCORES = textwrap.dedent(
    """
    import json, sys
    from nbgrader.api import Gradebook
    scores = {}
    with Gradebook(sys.argv[1]) as gb:
        for student in gb.students:
            notebook = gb.find_submission_notebook(sys.argv[3], sys.argv[2], student.id)
            scores[student.id] = {g.name: g.auto_score for g in notebook.grades}
    print(json.dumps(scores))
    """
)


NBGRADER_SCORES_BY_NOTEBOOK = textwrap.dedent(
    """
    import json, sys
    from nbgrader.api import Gradebook
    scores = {}
    with Gradebook(sys.argv[1]) as gb:
        for student in gb.students:
            for notebook in sys.argv[3:]:
                found = gb.find_submission_notebook(notebook, sys.argv[2], student.id)
                scores[f"{student.id}/{notebook}"] = found.score
    print(json.dumps(scores))
    """
)


def nbgrader_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{NBGRADER_VENV / 'bin'}:{os.environ.get('PATH', '')}"}


def nbgrader(course: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [str(NBGRADER_VENV / "bin" / "nbgrader"), *args]
    result = subprocess.run(command, cwd=course, env=nbgrader_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise BenchError(f"nbgrader {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def nbgrader_python(*args: str) -> str:
    python = str(NBGRADER_VENV / "bin" / "python")
    return subprocess.run([python, *args], capture_output=True, text=True, check=True, env=nbgrader_env()).stdout


def nbgrader_course(course: Path, source: Path) -> None:
    """An nbgrader course folder with the assignment, generated (not timed)."""
    shutil.copytree(source, course / "source" / ASSIGNMENT)
    (course / "source" / ASSIGNMENT / "assignment.yaml").unlink()
    (course / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\nc.Execute.timeout = {int(CELL_TIMEOUT)}\n"
    )
    nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")


def run_nbgrader(course: Path) -> tuple[float, dict[str, dict[str, float | None]]]:
    """(wall seconds of `nbgrader autograde --force` over submitted/, student -> grade cell -> auto score)."""
    started = time.perf_counter()
    graded = nbgrader(course, "autograde", ASSIGNMENT, "--force", check=False)
    seconds = time.perf_counter() - started
    (course / "autograde.log").write_text(graded.stdout + graded.stderr)
    if graded.returncode != 0:
        log(f"  nbgrader autograde exited with {graded.returncode} (see autograde.log); scores are read anyway")
    db = f"sqlite:///{course / 'gradebook.db'}"
    return seconds, json.loads(nbgrader_python("-c", NBGRADER_SCORES, db, ASSIGNMENT, "hw"))


# --------------------------------------------------------------------------------------------- hubfleet


def grade_with_hubfleet(
    spec: GradingSpec, submitted: Path, students: list[str]
) -> tuple[float, dict[str, GradeResult]]:
    """(wall seconds of grade_batch over `students`, student -> GradeResult)."""
    submissions = [Submission(id=s, folder=submitted / s / ASSIGNMENT) for s in students]
    results: dict[str, GradeResult] = {}
    started = time.perf_counter()
    summary = grade_batch(spec, submissions, limits=LIMITS, on_result=lambda r: results.__setitem__(r.submission_id, r))
    seconds = time.perf_counter() - started
    if summary.graded != len(students):
        raise BenchError(f"hubfleet graded {summary.graded} of {len(students)}")
    return seconds, results


def hubfleet_scores(result: GradeResult) -> dict[str, float | None]:
    return {c.grade_id: c.points for cells in result.notebooks.values() for c in cells if c.kind == "auto"}


def compare(
    kinds: dict[str, str], ours: dict[str, GradeResult], theirs: dict[str, dict[str, float | None]]
) -> dict[str, Any]:
    """Per-cell agreement on the well-behaved submissions both graded."""
    compared, mismatches = 0, []
    for student, scores in sorted(theirs.items()):
        if kinds[student] not in WELL_BEHAVED:
            continue
        mine = hubfleet_scores(ours[student])
        for cell, points in mine.items():
            compared += 1
            if scores.get(cell) != points:
                mismatches.append(
                    {
                        "student": student,
                        "kind": kinds[student],
                        "cell": cell,
                        "hubfleet": points,
                        "nbgrader": scores.get(cell),
                    }
                )
    return {"cells_compared": compared, "mismatches": mismatches, "agree": not mismatches and compared > 0}


def by_kind(kinds: dict[str, str], results: dict[str, GradeResult]) -> dict[str, dict[str, float]]:
    """Per kind of submission: how many, their mean total, and the mean seconds hubfleet spent on one."""
    table: dict[str, list[GradeResult]] = {}
    for student, result in results.items():
        table.setdefault(kinds[student], []).append(result)
    return {
        kind: {
            "n": len(rows),
            "mean_total": round(sum(r.total for r in rows) / len(rows), 3),
            "mean_seconds": round(sum(r.seconds for r in rows) / len(rows), 3),
        }
        for kind, rows in sorted(table.items())
    }


# --------------------------------------------------------------------------------------------- 1. batches


def batch_part(workdir: Path, size: int, rounds: int, corpus: Path, kinds: dict[str, str], spec: GradingSpec) -> dict:
    """`rounds` alternating runs of hubfleet and nbgrader over the first `size` submissions."""
    students = sorted(kinds)[:size]
    course = workdir / f"nbgrader-{size}"
    nbgrader_course(course, workdir / "source" / ASSIGNMENT)
    for student in students:
        shutil.copytree(corpus / student, course / "submitted" / student)
    ours: list[float] = []
    theirs: list[float] = []
    last: tuple[dict[str, GradeResult], dict[str, dict[str, float | None]]] = ({}, {})
    for index in range(rounds):
        order = ("hubfleet", "nbgrader") if index % 2 == 0 else ("nbgrader", "hubfleet")
        for system in order:
            if system == "hubfleet":
                seconds, results = grade_with_hubfleet(spec, corpus, students)
                ours.append(seconds)
                last = (results, last[1])
            else:
                seconds, scores = run_nbgrader(course)
                theirs.append(seconds)
                last = (last[0], scores)
            log(f"  batch of {size}, round {index + 1}: {system} {seconds:.1f} s")
    ratio = statistics.median(theirs) / statistics.median(ours)
    return {
        "submissions": size,
        "rounds": rounds,
        "hubfleet_seconds": [round(x, 2) for x in ours],
        "nbgrader_seconds": [round(x, 2) for x in theirs],
        "ratio": round(ratio, 2),
        "scores": compare(kinds, *last),
        "by_kind": by_kind(kinds, last[0]) if size >= len(MIX) else None,
    }


# --------------------------------------------------------------------------------------------- 2. single submissions

STUDENT_PREFIX = "grs"


def single_part(workdir: Path, singles: int, spec: GradingSpec, correct: Path) -> dict[str, Any]:
    """Submit → visible-test feedback through a real hub's exchange, against nbgrader validate / autograde of one."""
    hub = f"grb{secrets.token_hex(2)}"
    students = [f"{STUDENT_PREFIX}{i:02d}" for i in range(singles + 1)]
    hub_spec = {
        "auth": {"type": "shared-password", "password": secrets.token_urlsafe(12)},
        "culling": {"enabled": False},
        "courses": [{"name": "bench", "instructors": ["prof"], "students": students}],
    }
    state_dir = workdir / "fleet-state"
    notebook = (correct / NOTEBOOK).read_bytes()
    files = {"files": {NOTEBOOK: base64.b64encode(notebook).decode(), **_data_files(correct)}}
    course = workdir / "nbgrader-single"
    nbgrader_course(course, workdir / "source" / ASSIGNMENT)
    shutil.copytree(correct, course / "submitted" / "one" / ASSIGNMENT)
    with running_fleet(
        "gradingbench",
        hub,
        hub_spec,
        workdir / "fleet.yaml",
        state_dir,
    ) as running:
        released = run_hubfleet(
            "assignment",
            "release",
            hub,
            "bench",
            str(workdir / "source" / ASSIGNMENT),
            "--instant-feedback",
            "--state-dir",
            str(state_dir),
        )
        if released.returncode != 0:
            raise BenchError(f"release failed: {released.stdout} {released.stderr}")
        service = f"{running.door}/services/assignments/api/courses/bench/assignments/{ASSIGNMENT}"
        token = (state_dir / "hubs" / hub / "secrets" / "service_token").read_text().strip()
        with httpx.Client(timeout=120) as client:
            tokens = {
                s: client.post(
                    f"{running.door}/hub/api/users/{s}/tokens",
                    headers={"Authorization": f"token {token}"},
                    json={"note": "grading bench", "expires_in": 3600},
                )
                .raise_for_status()
                .json()["token"]
                for s in students
            }
            first = submit_and_wait(client, service, tokens[students[0]], files)
            latencies, validate, autograde_one = [], [], []
            for index, student in enumerate(students[1:]):
                latencies.append(submit_and_wait(client, service, tokens[student], files))
                if index % 3 == 0:
                    started = time.perf_counter()
                    nbgrader(course, "validate", str(correct / NOTEBOOK), check=False)
                    validate.append(time.perf_counter() - started)
                if index % 3 == 1:
                    started = time.perf_counter()
                    nbgrader(course, "autograde", ASSIGNMENT, "--student", "one", "--force")
                    autograde_one.append(time.perf_counter() - started)
    return {
        "submissions": len(latencies),
        "first_cold_s": round(first, 3),
        "hubfleet_s": summary(latencies),
        "nbgrader_validate_s": summary(validate),
        "nbgrader_autograde_one_s": summary(autograde_one),
        "p50": round(statistics.median(latencies), 3),
        "p95": round(statistics.quantiles(latencies, n=20, method="inclusive")[18], 3),
    }


def _data_files(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): base64.b64encode(path.read_bytes()).decode()
        for path in folder.rglob("*")
        if path.is_file() and path.suffix != ".ipynb"
    }


def submit_and_wait(client: httpx.Client, service: str, token: str, files: dict[str, Any]) -> float:
    """Seconds from the POST of a submission to its check's results."""
    headers = {"Authorization": f"token {token}"}
    started = time.perf_counter()
    receipt = client.post(f"{service}/submissions", headers=headers, json=files).raise_for_status().json()
    if receipt.get("check") != "queued":
        raise BenchError(f"no instant feedback queued: {receipt}")
    while True:
        check = client.get(f"{service}/submissions/{receipt['id']}/check", headers=headers).raise_for_status().json()
        if check["state"] not in ("queued", "running"):
            break
        if time.perf_counter() - started > 120:
            raise BenchError("instant feedback took more than 120 s")
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    if check["state"] != "done" or check["total"] != check["max_total"]:
        raise BenchError(f"the check of a correct submission: {check}")
    return seconds


# --------------------------------------------------------------------------------------------- 3. nbgrader courses


def compat_part(workdir: Path) -> dict[str, Any]:
    """The test suite's nbgrader course, generated and autograded by nbgrader 0.9.6 and by hubfleet."""
    from tests.edu import nbgrader_course_files as files

    theirs_root = files.write_course(workdir / "compat-nbgrader")
    nbgrader(theirs_root, "generate_assignment", files.ASSIGNMENT, "--force")
    files.write_submissions(theirs_root, theirs_root / "release" / files.ASSIGNMENT)
    nbgrader(theirs_root, "autograde", files.ASSIGNMENT, "--force")
    db = str(theirs_root / "gradebook.db")
    theirs = json.loads(
        nbgrader_python("-c", NBGRADER_SCORES_BY_NOTEBOOK, f"sqlite:///{db}", files.ASSIGNMENT, "problems", "extra")
    )
    ours_root = files.write_course(workdir / "compat-hubfleet")
    for args in (("generate",), ("autograde",)):
        if args == ("autograde",):
            files.write_submissions(ours_root, ours_root / "release" / files.ASSIGNMENT)
        done = run_hubfleet("assignment", "nbgrader", *args, str(ours_root), files.ASSIGNMENT)
        if done.returncode != 0:
            raise BenchError(f"hubfleet assignment nbgrader {args[0]} failed: {done.stdout} {done.stderr}")
    listed = run_hubfleet("assignment", "nbgrader", "scores", str(ours_root), files.ASSIGNMENT, "--json").stdout
    ours = {f"{row['student']}/{row['notebook']}": row["score"] for row in map(json.loads, listed.splitlines())}
    mismatches = {
        key: {"nbgrader": value, "hubfleet": ours.get(key)} for key, value in theirs.items() if ours.get(key) != value
    }
    return {"notebooks_compared": len(theirs), "mismatches": mismatches, "agree": not mismatches and bool(theirs)}


# --------------------------------------------------------------------------------------------- main


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the sandboxes switch to unprivileged accounts")
    if not os.access(DEFAULT_PYTHON, os.X_OK):
        raise BenchError(f"no {DEFAULT_PYTHON}: run `make setup`")
    if not Path("/usr/bin/python3").exists():
        raise BenchError("/usr/bin/python3 is needed to build nbgrader's virtualenv")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", "-n", type=int, default=200, help="the largest batch (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of the batches of 1 and 10 (default 3)")
    parser.add_argument("--singles", type=int, default=30, help="single submissions through a hub (default 30)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the corpus and nbgrader's course folders")
    args = parser.parse_args(argv)
    if args.submissions <= 10 or args.rounds < 1 or args.singles < 3:
        parser.error("--submissions > 10, --rounds >= 1, --singles >= 3")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = prepare(check_prerequisites)
    if started is None:
        return 2
    version = ensure_nbgrader()
    info = machine_info(after_jupyterhub={"nbgrader_version": version})
    log(
        f"Grading benchmark: batches of 1, 10, {args.submissions}; {args.singles} single submissions; "
        f"{info['nproc']} CPUs"
    )

    def body(workdir: Path) -> dict[str, Any]:
        write_source(workdir / "source" / ASSIGNMENT)
        spec = generate(load_source(workdir / "source" / ASSIGNMENT), workdir / "student-version")
        kinds = write_corpus(workdir / "student-version", workdir / "corpus", args.submissions)
        load_before = os.getloadavg()
        batches = {}
        for size, rounds in {1: args.rounds, 10: args.rounds, args.submissions: 1}.items():
            batches[size] = batch_part(workdir, size, rounds, workdir / "corpus", kinds, spec)
            log(f"batch of {size}: {batches[size]['ratio']}x nbgrader")
        correct = workdir / "corpus" / sorted(kinds)[0] / ASSIGNMENT
        single = single_part(workdir, args.singles, spec, correct)
        log(f"single submission: p50 {single['p50']} s, p95 {single['p95']} s")
        compat = compat_part(workdir)
        log(f"nbgrader course: {compat['notebooks_compared']} notebooks, agree: {compat['agree']}")
        return {
            "single_p50_s": single["p50"],
            "single_p95_s": single["p95"],
            "batch_ratio_1": batches[1]["ratio"],
            "batch_ratio_10": batches[10]["ratio"],
            f"batch_ratio_{args.submissions}": batches[args.submissions]["ratio"],
            "batches": {str(size): result for size, result in batches.items()},
            "single": single,
            "nbgrader_course": compat,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }

    status, results = run_in_workdir(
        "hubfleet-grading-bench-",
        body,
        (BenchError, OSError, subprocess.SubprocessError, httpx.HTTPError),
        args.keep_workdir,
        "corpus and nbgrader's course folders",
    )
    if results is None:
        return status
    log_table_header(
        "Batches: wall seconds (median) and ratio", f"{'batch':<8} {'hubfleet':>10} {'nbgrader':>10} {'ratio':>7}"
    )
    for size, result in results["batches"].items():
        log(
            f"{size:<8} {statistics.median(result['hubfleet_seconds']):>10.2f} "
            f"{statistics.median(result['nbgrader_seconds']):>10.2f} {result['ratio']:>6}x"
        )
    single = results["single"]
    log(
        f"\nsingle submission → visible-test feedback: p50 {single['p50']} s, p95 {single['p95']} s "
        f"(first, starting the grader: {single['first_cold_s']} s); nbgrader validate median "
        f"{single['nbgrader_validate_s']['median']} s, nbgrader autograde of one median "
        f"{single['nbgrader_autograde_one_s']['median']} s"
    )
    big = results["batches"][str(args.submissions)]["scores"]
    compat = results["nbgrader_course"]
    agree = big["agree"] and compat["agree"]
    log(
        f"scores: {big['cells_compared']} cells of well-behaved submissions, {len(big['mismatches'])} mismatches; "
        f"nbgrader course: {compat['notebooks_compared']} notebooks, {len(compat['mismatches'])} mismatches "
        f"-> {'AGREE' if agree else 'DISAGREE'}"
    )
    write_results(
        args.out,
        "autograding",
        started,
        settings={
            "submissions": args.submissions,
            "rounds": args.rounds,
            "singles": args.singles,
            "cell_timeout_seconds": CELL_TIMEOUT,
            "hubfleet_limits": asdict(LIMITS),
        },
        definition="wall seconds to grade a batch (hubfleet grade_batch vs nbgrader autograde) and to give feedback "
        "on one submission (hubfleet instant feedback through a hub vs nbgrader validate / autograde of one)",
        method=METHOD,
        machine=info,
        results=results,
    )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
