"""An nbgrader course folder written from scratch, in nbgrader 0.9's layout: ``nbgrader_config.py`` (a code and a
text stub, a header notebook, a time limit, options hubfleet ignores), ``autotests.yml``, ``source/ps1`` with two
notebooks (solutions, visible and hidden tests, ``### AUTOTEST`` and ``### HASHED AUTOTEST`` cells, partial
credit, a manually graded answer, a data file) and ``submitted/<student>/ps1`` for students whose notebooks behave
in different ways. Used by tests (scores expected as nbgrader 0.9.6 gives them) and by bench/grading.py (which
grades the same course with nbgrader 0.9.6 and compares).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ASSIGNMENT = "ps1"
KERNELSPEC = {"name": "python3", "language": "python", "display_name": "Python 3"}

CONFIG = '''\
"""Course GR101: nbgrader settings."""
c = get_config()
c.CourseDirectory.course_id = "gr101"
c.ClearSolutions.code_stub = {"python": "# your answer goes here\\nraise NotImplementedError('answer me')"}
c.ClearSolutions.text_stub = "Your answer, in words:"
c.IncludeHeaderFooter.header = "source/header.ipynb"
c.Execute.timeout = 10
c.Exchange.root = "/srv/nbgrader/exchange"
'''

AUTOTESTS = '''\
python3:
    setup: "from hashlib import md5"
    hash: 'md5(({{snippet}}).encode("utf-8") + b"{{salt}}").hexdigest()'
    dispatch: "type({{snippet}}).__name__"
    normalize: "str({{snippet}})"
    check: 'assert {{snippet}} == """{{value}}""", "{{message}}"'
    success: "print('all checks passed')"
    templates:
        default:
            - test: "type({{snippet}}).__name__"
              fail: "{{snippet}} has the wrong type"
            - test: "{{snippet}}"
              fail: "{{snippet}} has the wrong value"
        int:
            - test: "type({{snippet}}).__name__"
              fail: "{{snippet}} should be an int"
            - test: "{{snippet}} % 1000"
              fail: "{{snippet}} is not right (modulo 1000)"
        list:
            - test: "len({{snippet}})"
              fail: "{{snippet}} has the wrong length"
            - test: "sorted({{snippet}})"
              fail: "{{snippet}} has the wrong items"
'''


def meta(**nbgrader: object) -> dict[str, object]:
    return {"nbgrader": {"schema_version": 3, "grade": False, "solution": False, "locked": False, **nbgrader}}


def _solution(grade_id: str, body: str) -> nbformat.NotebookNode:
    header, rest = body.split("\n", 1)
    source = f"{header}\n    ### BEGIN SOLUTION\n{textwrap.indent(rest, '    ')}\n    ### END SOLUTION"
    return new_code_cell(source, metadata=meta(solution=True, grade_id=grade_id))


def _test(grade_id: str, points: float, source: str) -> nbformat.NotebookNode:
    return new_code_cell(source, metadata=meta(grade=True, points=points, grade_id=grade_id))


def problems() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            new_markdown_cell("# Problem set 1"),
            _solution("area", "def area(r):\nreturn math.pi * r ** 2"),
            _test(
                "test_area",
                2,
                "assert abs(area(1) - math.pi) < 1e-9\n### BEGIN HIDDEN TESTS\nassert area(0) == 0\n"
                "assert abs(area(2) - 4 * math.pi) < 1e-9\n### END HIDDEN TESTS",
            ),
            new_code_cell(
                "### BEGIN SOLUTION\nanswer = 6 * 7\nprimes = [2, 3, 5, 7, 11]\n### END SOLUTION",
                metadata=meta(solution=True, grade_id="values"),
            ),
            _test("test_answer", 1, "# AUTOTEST answer"),
            _test("test_primes", 2, "# HASHED AUTOTEST primes; len(primes)"),
            _solution("count", "def count_words(path):\nwith open(path) as f:\n    return len(f.read().split())"),
            _test("test_count", 1, "assert count_words('data/words.txt') == 5"),
            _test(
                "test_partial",
                3,
                "checks = [area(1) > 3, isinstance(answer, int), 11 in primes]\nfloat(sum(checks))",
            ),
            new_markdown_cell(
                "### BEGIN SOLUTION\nThe area grows with the square of the radius.\n### END SOLUTION",
                metadata=meta(grade=True, solution=True, points=1, grade_id="explain"),
            ),
        ],
        metadata={"kernelspec": KERNELSPEC},
    )


def extra() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            _solution("shout", "def shout(text):\nreturn text.upper() + '!'"),
            _test("test_shout", 1, "assert shout('hi') == 'HI!'"),
            _test("test_shout_hidden", 1, "### BEGIN HIDDEN TESTS\nassert shout('') == '!'\n### END HIDDEN TESTS"),
        ],
        metadata={"kernelspec": KERNELSPEC},
    )


def header() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            new_markdown_cell("**GR101** — work on your own; cite what you use."),
            new_code_cell("import math", metadata=meta(locked=True, grade_id="header_imports")),
        ],
        metadata={"kernelspec": KERNELSPEC},
    )


CORRECT = {
    "area": "def area(r):\n    return math.pi * r ** 2",
    "values": "answer = 42\nprimes = [11, 7, 5, 3, 2]",
    "count": "def count_words(path):\n    return len(open(path).read().split())",
    "shout": "def shout(text):\n    return text.upper() + '!'",
    "explain": "Quadratically: doubling the radius makes the area four times as large.",
}
STUDENTS: dict[str, dict[str, str]] = {
    "alice": CORRECT,
    "bob": {},  # the student version, untouched
    "carol": {  # some right, some wrong
        **CORRECT,
        "area": "def area(r):\n    return 3.14 * r * r",
        "values": "answer = '42'\nprimes = [2, 3, 5, 7]",
        "shout": "def shout(text):\n    return text.upper()",
    },
    "dave": {  # nbgrader's own showtraceback exploit, on wrong answers
        **CORRECT,
        "area": "import IPython.core.interactiveshell\n"
        "IPython.core.interactiveshell.InteractiveShell.showtraceback = lambda *a, **k: None\n"
        "def area(r):\n    return 0",
        "values": "answer = 41\nprimes = []",
    },
    "erin": {
        **CORRECT,
        "count": "import sys\ndef count_words(path):\n    print('counting', file=sys.stderr)\n    return 5",
    },
}
DELETED = {"erin": "test_shout"}
"""Test cells a student deleted (nbgrader does not put them back by default)."""


def write_course(root: Path) -> Path:
    """The course folder, sources only (``nbgrader generate_assignment`` or hubfleet make ``release/``)."""
    source = root / "source" / ASSIGNMENT
    (source / "data").mkdir(parents=True)
    (root / "nbgrader_config.py").write_text(CONFIG)
    (root / "autotests.yml").write_text(AUTOTESTS)
    nbformat.write(header(), str(root / "source" / "header.ipynb"))
    nbformat.write(problems(), str(source / "problems.ipynb"))
    nbformat.write(extra(), str(source / "extra.ipynb"))
    (source / "data" / "words.txt").write_text("one two three four five\n")
    return root


def write_submissions(root: Path, release: Path) -> None:
    """Each student's ``submitted/<student>/ps1`` made from the student version in ``release``."""
    for student, answers in STUDENTS.items():
        folder = root / "submitted" / student / ASSIGNMENT
        (folder / "data").mkdir(parents=True)
        for name in ("problems.ipynb", "extra.ipynb"):
            nb = json.loads((release / name).read_text())
            cells = []
            for cell in nb["cells"]:
                grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
                if DELETED.get(student) == grade_id:
                    continue
                if grade_id in answers:
                    cell["source"] = answers[grade_id]
                cells.append(cell)
            nb["cells"] = cells
            (folder / name).write_text(json.dumps(nb))
        (folder / "data" / "words.txt").write_text("one two three four five\n")
        (folder / "timestamp.txt").write_text("2026-11-30 12:00:00.000000 UTC")
