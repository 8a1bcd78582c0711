"""Submissions that try to fake their verdicts, or to break out of the sandbox, against the real grader.

Each adversarial submission is a wrong (or partly wrong) answer plus a trick; its expected score is the score of
the same answer without the trick (its "honest twin", graded in the same batch), and the expected total is spelled
out too. Real sandboxes: root, cgroups, namespaces, the user environment.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
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
from hubfleet.edu.assignments import nbgrader_format as fmt
from tests.edu.sources import graded_cell, nbgrader, solution_cell

pytestmark = pytest.mark.needs("root", "cgroups", "user_env")

LIMITS = SandboxLimits(cell_seconds=3.0, notebook_seconds=30.0, memory_bytes=256 * 2**20, pids=64)
NOTEBOOK = "hw.ipynb"


SQUARE = "def square(x):\n    return x * x"
SQUARES = "def squares(n):\n    return [square(i) for i in range(n)]"
TOTAL = "def column_total(path):\n    with open(path) as f:\n        return sum(int(line.split(',')[1]) for line in f)"


def source_notebook() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            new_markdown_cell("# Squares"),
            new_code_cell(
                "import math\nimport numpy as np\n\ndef check_close(a, b):\n    return abs(a - b) < 1e-9",
                metadata=nbgrader(locked=True, grade_id="setup"),
            ),
            solution_cell("square", SQUARE),
            graded_cell("t_square", 2, "assert square(3) == 9", "assert square(-2) == 4"),
            solution_cell("squares", SQUARES),
            graded_cell("t_squares", 1, "assert len(squares(3)) == 3\nassert sum(squares(3)) == 5"),
            graded_cell(
                "t_close",
                1,
                "assert np.allclose(square(1.5), 2.25)\nassert check_close(math.sqrt(square(4.0)), 4.0)",
                "assert np.allclose(square(10), 100)",
            ),
            solution_cell("column_total", TOTAL),
            graded_cell("t_data", 1, "assert column_total('data/values.csv') == 60"),
            graded_cell("t_partial", 2, "sum(square(i) == i * i for i in range(1, 5)) / 2"),
            graded_cell("t_stats", 1, "import statistics\nassert statistics.mean(squares(4)) == 3.5"),
        ],
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}},
    )


CORRECT = {"square": SQUARE, "squares": SQUARES, "column_total": TOTAL}
WRONG = {**CORRECT, "square": "def square(x):\n    return x + x"}
SCORES_CORRECT = {"t_square": 2, "t_squares": 1, "t_close": 1, "t_data": 1, "t_partial": 2, "t_stats": 1}
SCORES_WRONG = {"t_square": 0, "t_squares": 0, "t_close": 0, "t_data": 1, "t_partial": 0.5, "t_stats": 0}


@dataclass
class Case:
    """A submission: answers (by solution cell), extra student cells (inserted after a cell, by grade_id), edits
    of other cells, and what it should score — as its honest twin (the same answers, no trick) and in total."""

    answers: dict[str, str]
    twin: dict[str, str] | None
    total: float
    extra: dict[str, str] = field(default_factory=dict)
    edit: dict[str, object] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    errors: bool = False


def trick(code: str) -> str:
    return textwrap.dedent(code).strip()


ALWAYS_EQUAL = trick(
    """
    class Answer:
        def __eq__(self, other): return True
        def __ne__(self, other): return False
        def __hash__(self): return 0
    def square(x):
        return Answer()
    """
)
SHELL_CLASS = "import IPython.core.interactiveshell as s\ns.InteractiveShell"
FAKE_STATISTICS = "import types\nfake = types.ModuleType('statistics')\nfake.mean = lambda values: 3.5\n"

CASES: dict[str, Case] = {
    # ---- IPython's machinery: what the shell displays must not decide the verdict
    "showtraceback-class": Case(
        WRONG,
        WRONG,
        1.5,
        extra={"square": f"{SHELL_CLASS}.showtraceback = lambda *a, **k: None"},
    ),
    "showtraceback-none": Case(
        WRONG,
        WRONG,
        1.5,
        extra={"square": f"{SHELL_CLASS}.showtraceback = None"},
    ),
    "custom-exception-handler": Case(
        WRONG, WRONG, 1.5, extra={"square": "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)"}
    ),
    "ast-transformer-drops-asserts": Case(
        WRONG,
        WRONG,
        1.5,
        extra={
            "square": trick(
                """
                import ast
                class Drop(ast.NodeTransformer):
                    def visit_Assert(self, node):
                        return ast.Pass()
                get_ipython().ast_transformers.append(Drop())
                """
            )
        },
    ),
    "input-transformer": Case(
        WRONG,
        WRONG,
        1.5,
        extra={"square": "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])"},
    ),
    "display-formatter-partial-credit": Case(
        WRONG,
        WRONG,
        1.5,
        extra={
            "square": trick(
                """
                import sys
                f = get_ipython().display_formatter.formatters['text/plain']
                f.for_type(float, lambda obj, p, cycle: p.text('2.0'))
                sys.displayhook = lambda value: print(2.0)
                """
            )
        },
    ),
    "bdbquit-hides-the-error": Case(
        {**CORRECT, "square": "import bdb\ndef square(x):\n    raise bdb.BdbQuit()"},
        None,
        1.0,
    ),
    # ---- builtins and comparisons
    "builtins-patched": Case(WRONG, WRONG, 1.5, extra={"square": "import builtins\nbuiltins.sum = lambda *a, **k: 5"}),
    "builtins-shadowed": Case(WRONG, WRONG, 1.5, extra={"square": "sum = lambda *a, **k: 5"}),
    "builtins-dict-replaced": Case(
        WRONG, WRONG, 1.5, extra={"square": "__builtins__ = dict(vars(__builtins__), sum=lambda *a, **k: 5)"}
    ),
    "always-equal-object": Case(
        {**CORRECT, "square": ALWAYS_EQUAL}, {**CORRECT, "square": "def square(x):\n    return None"}, 1.0
    ),
    "int-subclass-equal": Case(
        {
            **CORRECT,
            "square": trick(
                """
                class Number(int):
                    def __eq__(self, other): return True
                    __hash__ = int.__hash__
                def square(x):
                    return Number(x + x)
                """
            ),
        },
        WRONG,
        1.5,
    ),
    # ---- what the tests call
    "library-patched": Case(
        WRONG, WRONG, 1.5, extra={"square": "np.allclose = lambda *a, **k: True\nmath.sqrt = lambda x: 4.0"}
    ),
    "instructor-helper-code-replaced": Case(
        WRONG,
        WRONG,
        1.5,
        extra={"square": "check_close.__code__ = (lambda a, b: True).__code__\nnp.allclose = lambda *a, **k: True"},
    ),
    "instructor-names-rebound": Case(
        WRONG,
        WRONG,
        1.5,
        extra={
            "square": "check_close = lambda a, b: True\n"
            "np = type('np', (), {'allclose': staticmethod(lambda *a, **k: True)})"
        },
    ),
    "patched-while-the-test-runs": Case(
        {
            **CORRECT,
            "square": trick(
                """
                def square(x):
                    import numpy
                    numpy.allclose = lambda *a, **k: True
                    return x * x if x != 10 else 0
                """
            ),
        },
        {**CORRECT, "square": "def square(x):\n    return x * x if x != 10 else 0"},
        7.0,
    ),
    "trace-function-skips-asserts": Case(
        {
            **CORRECT,
            "square": trick(
                """
                import sys
                def square(x):
                    if x == -2:
                        def skip(frame, event, arg):
                            return skip
                        sys.settrace(skip)
                        sys._getframe(1).f_trace = skip
                        return 0
                    return x * x
                """
            ),
        },
        {**CORRECT, "square": "def square(x):\n    return 0 if x == -2 else x * x"},
        6.0,
    ),
    "audit-hook": Case(WRONG, WRONG, 1.5, extra={"square": "import sys\nsys.addaudithook(lambda event, args: None)"}),
    "thread-keeps-patching": Case(
        WRONG,
        WRONG,
        1.5,
        extra={
            "square": trick(
                """
                import builtins, threading, time
                def patch():
                    while True:
                        builtins.sum = lambda *a, **k: 5
                        np.allclose = lambda *a, **k: True
                        time.sleep(0.0005)
                threading.Thread(target=patch, daemon=True).start()
                """
            )
        },
    ),
    "gc-callback-patches": Case(
        WRONG,
        WRONG,
        1.5,
        extra={"square": "import gc, builtins\ngc.callbacks.append(lambda *a: setattr(builtins, 'sum', lambda *b: 5))"},
    ),
    "fake-module-in-sys-modules": Case(
        WRONG, WRONG, 1.5, extra={"square": FAKE_STATISTICS + "import sys\nsys.modules['statistics'] = fake"}
    ),
    "module-file-in-the-submission": Case(
        WRONG, WRONG, 1.5, files={"statistics.py": "def mean(values):\n    return 3.5\n"}
    ),
    "import-hook": Case(
        WRONG,
        WRONG,
        1.5,
        extra={
            "square": FAKE_STATISTICS
            + trick(
                """
                import sys, importlib.abc, importlib.util
                class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
                    def find_spec(self, name, path, target=None):
                        return importlib.util.spec_from_loader(name, self) if name == 'statistics' else None
                    def create_module(self, spec):
                        return fake
                    def exec_module(self, module):
                        pass
                sys.meta_path.insert(0, Finder())
                """
            )
        },
    ),
    # ---- exits, signals, processes, memory, output
    "sys-exit-in-the-tested-function": Case(
        {**CORRECT, "square": "import sys\ndef square(x):\n    sys.exit(0)"}, None, 1.0
    ),
    "os-exit-in-a-test": Case(
        {**CORRECT, "square": "import os\ndef square(x):\n    os._exit(0)"}, None, 0.0, errors=True
    ),
    "ignores-the-alarm-and-loops": Case(
        {
            **CORRECT,
            "square": "import signal\ndef square(x):\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
            "    while True:\n        pass",
        },
        None,
        0.0,
        errors=True,
    ),
    "stops-itself": Case(
        {**CORRECT, "square": "import os, signal\ndef square(x):\n    os.kill(os.getpid(), signal.SIGSTOP)"},
        None,
        0.0,
        errors=True,
    ),
    "kills-init-and-everyone": Case(
        CORRECT,
        CORRECT,
        8.0,
        extra={
            "square": "import os, signal\nfor pid in (1, -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
            "    except OSError:\n        pass"
        },
    ),
    "leaves-a-process-behind": Case(
        WRONG,
        WRONG,
        1.5,
        extra={"square": "import os, time, builtins\nif os.fork() == 0:\n    while True:\n        time.sleep(0.01)\n"},
    ),
    "memory-in-a-test": Case(
        {**CORRECT, "square": "def square(x):\n    hog = bytearray(1024 * 2**20)\n    return x * x"},
        None,
        0.0,
        errors=True,
    ),
    "output-flood": Case(CORRECT, CORRECT, 8.0, extra={"square": "for _ in range(2000):\n    print('x' * 10000)"}),
    # ---- tampering with test cells, metadata and data
    "test-cell-edited": Case(WRONG, WRONG, 1.5, edit={"t_square": "pass"}),
    "test-cell-deleted": Case(WRONG, WRONG, 1.5, edit={"t_square": None}),
    "test-cell-made-markdown": Case(WRONG, WRONG, 1.5, edit={"t_square": "markdown"}),
    "points-raised-and-fake-test": Case(WRONG, WRONG, 1.5, edit={"t_data": "points", "bonus": "add"}),
    "duplicate-test-cell-first": Case(WRONG, WRONG, 1.5, edit={"t_square": "duplicate"}),
    "data-file-changed": Case(
        {**CORRECT, "column_total": "def column_total(path):\n    return sum(map(int, open(path).read().split()))"},
        None,
        7.0,
        files={"data/values.csv": "20 20 20\n"},
    ),
}


def make_submission(release: Path, folder: Path, case: Case, *, honest: bool = False) -> Path:
    nb = nbformat.read(str(release / NOTEBOOK), as_version=4)
    answers = case.twin if honest else case.answers
    cells = []
    for cell in nb.cells:
        gid = fmt.grade_id(cell) if fmt.has_nbgrader(cell) else None
        if gid in answers:
            cell.source = answers[gid]
        action = None if honest else case.edit.get(gid, "keep")
        if gid in (case.edit if not honest else {}):
            if action is None:
                continue
            if action == "markdown":
                cell = nbformat.v4.new_markdown_cell(cell.source, metadata=cell.metadata)
            elif action == "points":
                cell.metadata.nbgrader["points"] = 100
            elif action == "duplicate":
                cells.append(nbformat.v4.new_code_cell("pass", metadata=json.loads(json.dumps(cell.metadata))))
            elif isinstance(action, str):
                cell.source = action
        cells.append(cell)
        if not honest and gid in case.extra:
            cells.append(new_code_cell(case.extra[gid]))
    if not honest and case.edit.get("bonus") == "add":
        cells.append(new_code_cell("pass", metadata=nbgrader(grade=True, points=50, grade_id="bonus")))
    nb.cells = cells
    folder.mkdir(parents=True)
    nbformat.write(nb, str(folder / NOTEBOOK))
    (folder / "data").mkdir()
    (folder / "data" / "values.csv").write_text("a,10\nb,20\nc,30\n")
    for name, text in ({} if honest else case.files).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def assignment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GradingSpec]:
    root = tmp_path_factory.mktemp("adversarial")
    source = root / "source"
    (source / "data").mkdir(parents=True)
    (source / "assignment.yaml").write_text("name: squares\ntitle: Squares\n")
    (source / "data" / "values.csv").write_text("a,10\nb,20\nc,30\n")
    nbformat.write(source_notebook(), str(source / NOTEBOOK))
    return root, generate(load_source(source), root / "release")


@pytest.fixture(scope="module")
def graded(assignment: tuple[Path, GradingSpec]) -> Iterator[dict[str, GradeResult]]:
    """Every case and its honest twin, plus a correct and a wrong submission, graded in one batch."""
    root, spec = assignment
    work = Path(tempfile.mkdtemp(prefix="gr-adversarial-", dir="/var/lib"))
    try:
        subs = [
            Submission(
                id="correct", folder=make_submission(root / "release", work / "correct", Case(CORRECT, None, 8))
            ),
            Submission(id="wrong", folder=make_submission(root / "release", work / "wrong", Case(WRONG, None, 1.5))),
        ]
        for name, case in CASES.items():
            subs.append(Submission(id=name, folder=make_submission(root / "release", work / name, case)))
            if case.twin is not None:
                twin = make_submission(root / "release", work / f"{name}.twin", case, honest=True)
                subs.append(Submission(id=f"{name}.twin", folder=twin))
        results: dict[str, GradeResult] = {}
        grade_batch(
            spec,
            subs,
            workers=2,
            limits=LIMITS,
            data_dir=root / "source",
            on_result=lambda r: results.__setitem__(r.submission_id, r),
        )
        yield results
    finally:
        shutil.rmtree(work)


def points(result: GradeResult) -> dict[str, float | None]:
    return {c.grade_id: c.points for c in result.notebooks[NOTEBOOK] if c.kind == "auto"}


def test_honest_baselines(graded: dict[str, GradeResult]) -> None:
    assert points(graded["correct"]) == SCORES_CORRECT and graded["correct"].total == 8
    assert points(graded["wrong"]) == SCORES_WRONG and graded["wrong"].total == 1.5


@pytest.mark.parametrize("name", sorted(CASES))
def test_adversarial_submission_scores_as_expected(graded: dict[str, GradeResult], name: str) -> None:
    case, result = CASES[name], graded[name]
    detail = [(c.grade_id, c.points, c.status, c.message[:160]) for c in result.notebooks[NOTEBOOK]]
    assert result.total == case.total, detail
    if case.twin is not None:
        assert points(result) == points(graded[f"{name}.twin"]), detail
    assert bool(result.errors) == case.errors, result.errors


def test_at_least_twenty_kinds() -> None:
    assert len(CASES) >= 20


# --------------------------------------------------------------------------------------------- the sandbox's view

PROBE = trick(
    """
    import glob, json, os, socket
    found = {}
    def readable(path):
        try:
            with open(path, 'rb') as f:
                f.read(1)
            return True
        except OSError:
            return False
    def listing(path):
        try:
            return sorted(os.listdir(path))
        except OSError as exc:
            return type(exc).__name__
    found['root'] = listing('/')
    found['home'] = listing('/home')
    found['etc'] = listing('/etc')
    found['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
    found['state'] = {p: os.path.exists(p) for p in STATE}
    found['readable'] = {p: readable(p) for p in SECRETS}
    found['hostname'] = socket.gethostname()
    found['write_env'] = os.access(os.path.dirname(os.__file__), os.W_OK)
    try:
        socket.create_connection(('127.0.0.1', PORT), timeout=1).close()
        found['network'] = True
    except OSError:
        found['network'] = False
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(ABSTRACT)
        found['abstract_socket'] = True
    except OSError:
        found['abstract_socket'] = False
    print(json.dumps(found))
    """
)


def test_the_sandbox_sees_only_its_own_submission(assignment: tuple[Path, GradingSpec], tmp_path: Path) -> None:
    """A child cannot list /home, the state root or host processes, nor read another submission, the hidden
    tests (the grading spec), the grader's files or the host's secrets; it has no network and no abstract socket."""
    root, spec = assignment
    work = Path(tempfile.mkdtemp(prefix="gr-probe-", dir="/var/lib"))
    state = Path(tempfile.mkdtemp(prefix="gr-state-", dir="/var/lib"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0gr-probe-abstract")
    abstract.listen()
    try:
        (state / "fleet.sqlite").write_text("state")
        spec_file = root / "source" / ".hubfleet-grading.json"
        spec_file.write_text(spec.dumps())
        other = make_submission(root / "release", work / "other", Case(CORRECT, None, 8))
        secrets = [str(other / NOTEBOOK), str(spec_file), "/etc/shadow", "/root/.bashrc", str(state / "fleet.sqlite")]
        probe = (
            f"STATE = {[str(state), '/var/lib/hubfleet', '/srv', '/root', '/work', '/home']!r}\nSECRETS = {secrets!r}\n"
            f"PORT = {listener.getsockname()[1]}\nABSTRACT = b'\\0gr-probe-abstract'\n" + PROBE
        )
        folder = make_submission(root / "release", work / "probe", Case(CORRECT, None, 8, extra={"square": probe}))
        subprocess.run(["chmod", "-R", "a+rX", str(work), str(state), str(root)], check=True)
        results: list[GradeResult] = []
        grade_batch(
            spec,
            [Submission(id="probe", folder=folder)],
            limits=LIMITS,
            graded_root=tmp_path / "graded",
            on_result=results.append,
        )
        (result,) = results
        assert result.total == 8, result.notebooks
        executed = nbformat.read(str(tmp_path / "graded" / "probe" / NOTEBOOK), as_version=4)
        output = next(c for c in executed.cells if c.cell_type == "code" and "found = {}" in c.source).outputs[0]
        found = json.loads(output["text"])
    finally:
        listener.close()
        abstract.close()
        shutil.rmtree(work)
        shutil.rmtree(state)
    allowed = {
        "assignment",
        "bin",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "opt",
        "proc",
        "sbin",
        "tmp",
        "usr",
    }
    assert set(found["root"]) <= allowed | {"var"} and "assignment" in found["root"], found["root"]
    assert found["home"] == "FileNotFoundError"
    assert found["etc"] == sorted(["group", "hosts", "ld.so.cache", "localtime", "nsswitch.conf", "passwd"])
    assert found["pids"] == [1, 2], "only the namespace's init and the notebook's process"
    assert not any(found["state"].values()), found["state"]
    assert not any(found["readable"].values()), found["readable"]
    assert found["hostname"] == "grader" and not found["write_env"]
    assert not found["network"] and not found["abstract_socket"]


def test_stopping_every_other_process_happens_only_inside_a_sandbox() -> None:
    """Before a test cell the worker kills every other process of its sandbox (``kill(-1)``): outside a sandbox's
    PID namespace, as root or as any user, it must never do that."""
    from hubfleet.edu.assignments._child.hygiene import _namespace_of, may_stop_others

    host = _namespace_of("self")
    assert not may_stop_others(host)
    child = os.fork()
    if child == 0:  # an unprivileged process of the host's namespace
        try:
            os.setgid(65534)
            os.setuid(65534)
            os._exit(1 if may_stop_others(host) else 0)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
