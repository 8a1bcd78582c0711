"""Autograding throughput: hubfleet's sandboxed parallel grader against nbgrader 0.9.6 `autograde`, in one run.

Usage (as root, from the repository root):

    .venv/bin/python bench/grading.py [--submissions 200] [--nbgrader-subset 60] [--out bench/results/grading.json]

The script writes an nbgrader-format assignment (10 autograded questions with visible and hidden tests, a data
file, a manually graded answer) and a corpus of submissions in a fixed repeating mix: correct, partly wrong,
erroring, slow (a 0.5 s sleep), looping (an infinite loop: the cell times out) and memory-hungry (800 MiB).
hubfleet grades the whole corpus (`grade_batch` with its default of two sandboxes per core), then the first
`--nbgrader-subset` submissions again; nbgrader 0.9.6 `autograde` (serial, a fresh kernel per submission, no
sandbox) grades that same subset, from its own virtualenv (/opt/hubfleet/bench-nbgrader, built from
/usr/bin/python3 with `pip install nbgrader==0.9.6` if missing: it is never installed into hubfleet's
environment). Both use a 5 s cell timeout. The subset is a prefix of the repeating mix, so it has the same
proportions. The script checks that both give every well-behaved submission (correct, partly wrong, erroring,
slow) the same score on every cell, prints the throughputs and their ratio, and writes the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nbformat
from common import BenchError, log, log_table_header, machine_info, prepare, run_in_workdir, write_results
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from hubfleet.edu.assignments import GradeResult, SandboxLimits, Submission, generate, grade_batch, load_source
from hubfleet.edu.assignments.sandbox import DEFAULT_PYTHON

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
    "hubfleet: grade_batch over the whole corpus, then over the subset, default workers (two per core), 5 s per cell,"
    " 512 MiB and 128 processes per sandbox; the time includes starting the forkservers",
    "nbgrader 0.9.6: `nbgrader autograde hw1` over the subset (a prefix of the corpus, same mix), serial,"
    " --Execute.timeout=5, in its own virtualenv; `generate_assignment` and copying the files are not timed",
    "throughput = submissions / wall seconds of the grading call or command; ratio = hubfleet / nbgrader, on the"
    " same subset (headline) and with hubfleet's full-corpus throughput",
    "scores: every autograded cell of every well-behaved submission of the subset must score the same in both",
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


def _meta(**nbgrader: Any) -> dict[str, Any]:
    return {"nbgrader": {"schema_version": 3, "solution": False, "grade": False, "locked": False, **nbgrader}}


def write_source(folder: Path) -> None:
    """The assignment's source folder, readable by both graders (nbgrader ignores assignment.yaml)."""
    cells = [
        new_markdown_cell("# Homework 1\n\nTen small functions; each has visible and hidden tests."),
        new_code_cell("import math\nimport os", metadata=_meta(locked=True, grade_id="setup")),
    ]
    for q in QUESTIONS:
        header, body = q.solution.split("\n", 1)
        solution = f"{header}\n    ### BEGIN SOLUTION\n{body}\n    ### END SOLUTION"
        tests = f"{q.test}\n### BEGIN HIDDEN TESTS\n{q.hidden}\n### END HIDDEN TESTS"
        cells += [
            new_markdown_cell(f"**{q.name}** ({q.points} point{'s' if q.points > 1 else ''})"),
            new_code_cell(solution, metadata=_meta(solution=True, grade_id=q.name)),
            new_code_cell(tests, metadata=_meta(grade=True, points=q.points, grade_id=f"test_{q.name}")),
        ]
    cells.append(
        new_markdown_cell(
            "### BEGIN SOLUTION\nBecause sums are linear.\n### END SOLUTION",
            metadata=_meta(grade=True, solution=True, points=2, grade_id="explain"),
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


def run_nbgrader(course: Path) -> tuple[float, dict[str, dict[str, float | None]]]:
    """(wall seconds of `nbgrader autograde`, student -> grade cell -> auto score)."""
    (course / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\nc.Execute.timeout = {int(CELL_TIMEOUT)}\n"
    )
    env = {**os.environ, "PATH": f"{NBGRADER_VENV / 'bin'}:{os.environ.get('PATH', '')}"}
    nbgrader = str(NBGRADER_VENV / "bin" / "nbgrader")
    generated = subprocess.run(
        [nbgrader, "generate_assignment", ASSIGNMENT, "--force"], cwd=course, env=env, capture_output=True, text=True
    )
    if generated.returncode != 0:
        raise BenchError(f"nbgrader generate_assignment failed:\n{generated.stderr[-3000:]}")
    started = time.perf_counter()
    graded = subprocess.run(
        [nbgrader, "autograde", ASSIGNMENT, "--force"], cwd=course, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    (course / "autograde.log").write_text(graded.stdout + graded.stderr)
    if graded.returncode != 0:
        log(f"  nbgrader autograde exited with {graded.returncode} (see autograde.log); scores are read anyway")
    python = str(NBGRADER_VENV / "bin" / "python")
    db = f"sqlite:///{course / 'gradebook.db'}"
    scores = subprocess.run(
        [python, "-c", NBGRADER_SCORES, db, ASSIGNMENT, "hw"], capture_output=True, text=True, check=True
    )
    return seconds, json.loads(scores.stdout)


# --------------------------------------------------------------------------------------------- hubfleet


def run_hubfleet(source: Path, release: Path, submitted: Path, students: list[str]) -> tuple[float, dict]:
    """(wall seconds of grade_batch over `students`, student -> GradeResult)."""
    spec = generate(load_source(source), release)
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
    parser.add_argument("--submissions", "-n", type=int, default=200, help="corpus size (default 200)")
    parser.add_argument("--nbgrader-subset", type=int, default=60, help="submissions nbgrader grades (default 60)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the corpus and nbgrader's course folder")
    args = parser.parse_args(argv)
    if not 1 <= args.nbgrader_subset <= args.submissions:
        parser.error("--nbgrader-subset must be between 1 and --submissions")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = prepare(check_prerequisites)
    if started is None:
        return 2
    version = ensure_nbgrader()
    info = machine_info(after_jupyterhub={"nbgrader_version": version})
    log(f"Grading benchmark: {args.submissions} submissions, nbgrader on {args.nbgrader_subset}, {info['nproc']} CPUs")

    def body(workdir: Path) -> dict[str, Any]:
        course = workdir / "course"
        write_source(course / "source" / ASSIGNMENT)
        ours_release = workdir / "hubfleet-release"
        spec = generate(load_source(course / "source" / ASSIGNMENT), workdir / "student-version")
        kinds = write_corpus(workdir / "student-version", workdir / "corpus", args.submissions)
        students = sorted(kinds)
        subset = students[: args.nbgrader_subset]
        for student in subset:
            shutil.copytree(workdir / "corpus" / student, course / "submitted" / student)
        log(f"corpus: {len(students)} submissions of {len(QUESTIONS)} questions ({spec.max_total:g} points)")
        load_before = os.getloadavg()
        full_seconds, full = run_hubfleet(course / "source" / ASSIGNMENT, ours_release, workdir / "corpus", students)
        log(f"hubfleet: {len(students)} submissions in {full_seconds:.1f} s")
        shutil.rmtree(ours_release)
        sub_seconds, sub = run_hubfleet(course / "source" / ASSIGNMENT, ours_release, workdir / "corpus", subset)
        log(f"hubfleet: subset of {len(subset)} in {sub_seconds:.1f} s")
        nb_seconds, nb_scores = run_nbgrader(course)
        log(f"nbgrader: subset of {len(subset)} in {nb_seconds:.1f} s")
        load_after = os.getloadavg()
        agreement = compare(kinds, sub, nb_scores)
        full_rate = len(students) / full_seconds
        sub_rate = len(subset) / sub_seconds
        nb_rate = len(nb_scores) / nb_seconds if nb_scores else 0.0
        return {
            "corpus": {
                "submissions": len(students),
                "questions": len(QUESTIONS),
                "max_total": spec.max_total,
                "kinds": {k: sum(1 for v in kinds.values() if v == k) for k in sorted(set(kinds.values()))},
            },
            "nbgrader_subset": len(subset),
            "hubfleet_full": {
                "seconds": round(full_seconds, 2),
                "per_second": round(full_rate, 2),
                "by_kind": by_kind(kinds, full),
            },
            "hubfleet_subset": {"seconds": round(sub_seconds, 2), "per_second": round(sub_rate, 2)},
            "nbgrader": {
                "seconds": round(nb_seconds, 2),
                "graded": len(nb_scores),
                "per_second": round(nb_rate, 3),
                "seconds_per_submission": round(nb_seconds / max(len(nb_scores), 1), 3),
            },
            "ratio_same_subset": round(sub_rate / nb_rate, 1) if nb_rate else None,
            "ratio_full_corpus": round(full_rate / nb_rate, 1) if nb_rate else None,
            "scores": agreement,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "errors_by_kind": {
                k: sorted({e.split(": ", 1)[-1][:80] for s, r in full.items() if kinds[s] == k for e in r.errors})
                for k in sorted(set(kinds.values()))
            },
        }

    status, results = run_in_workdir(
        "hubfleet-grading-bench-",
        body,
        (BenchError, OSError, subprocess.SubprocessError),
        args.keep_workdir,
        "corpus and nbgrader course",
    )
    if results is None:
        return status
    log_table_header("Throughput (submissions per second)", f"{'grader':<34} {'n':>5} {'seconds':>9} {'per s':>8}")
    log(
        f"{'hubfleet, full corpus':<34} {results['corpus']['submissions']:>5} "
        f"{results['hubfleet_full']['seconds']:>9.1f} {results['hubfleet_full']['per_second']:>8.2f}"
    )
    log(
        f"{'hubfleet, subset':<34} {results['nbgrader_subset']:>5} "
        f"{results['hubfleet_subset']['seconds']:>9.1f} {results['hubfleet_subset']['per_second']:>8.2f}"
    )
    log(
        f"{'nbgrader ' + version + ' autograde, subset':<34} {results['nbgrader']['graded']:>5} "
        f"{results['nbgrader']['seconds']:>9.1f} {results['nbgrader']['per_second']:>8.3f}"
    )
    log(
        f"\nratio hubfleet / nbgrader: {results['ratio_same_subset']}x on the same subset, "
        f"{results['ratio_full_corpus']}x with hubfleet's full-corpus throughput"
    )
    per_kind = results["hubfleet_full"]["by_kind"]
    log(
        "hubfleet seconds per submission, by kind: "
        + ", ".join(f"{k} {v['mean_seconds']:.3f}" for k, v in per_kind.items())
    )
    scores = results["scores"]
    log(
        f"scores on well-behaved submissions: {scores['cells_compared']} cells compared, "
        f"{len(scores['mismatches'])} mismatches -> {'AGREE' if scores['agree'] else 'DISAGREE'}"
    )
    write_results(
        args.out,
        "autograding throughput",
        started,
        settings={
            "submissions": args.submissions,
            "nbgrader_subset": args.nbgrader_subset,
            "cell_timeout_seconds": CELL_TIMEOUT,
            "hubfleet_limits": asdict(LIMITS),
        },
        definition="submissions graded per wall-clock second, hubfleet grade_batch vs nbgrader autograde",
        method=METHOD,
        machine=info,
        results=results,
    )
    return 0 if scores["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
