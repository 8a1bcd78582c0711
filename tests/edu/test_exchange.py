"""The assignment exchange end to end on a real fleet: a real hub with courses and LTI, its exchange service (a real
JupyterHub service behind the hub's proxy), a student's real server running `hubfleet-assignment`, the sandboxed
autograder, and the real LMS peer (lti1p3platform, tests/lms/peer.py) receiving the scores through AGS.

One module-scoped fleet serves every test; the tests run in file order and build on the first one's assignment.
What a launch would record (the students' LMS ids, the course's AGS line-items URL) is written into the fleet
database directly with the functions the LTI launch uses, so these tests do not depend on launching (tested in
test_lti.py) and can use password logins for the students' servers.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from sqlalchemy import select

from hubfleet.common.settings import HubSettings
from hubfleet.db import open_database
from hubfleet.edu.exchange.settings import DEFAULT_MAX_UPLOAD_BYTES, SERVICE_NAME, SETTINGS_FILE, ExchangeSettings
from hubfleet.edu.exchange.tables import Grade, Grading, Submission
from hubfleet.health.client import TokenLogin
from tests.edu.sources import graded_cell, solution_cell, write_source
from tests.helpers import USER_ENV, RunningFleet, hubfleet, unique_hub
from tests.lms.courses import LinkedCourse, lti_hub_yaml
from tests.lms.peer import PeerLMS

H = unique_hub("ex")
PASSWORD = "exchange-test-password"
CONTEXT = "ctx-ds"
SUBS = {"sa": "lms-sa", "sb": "lms-sb"}  # hub user → their id in the LMS
ASSIGNMENT = "hw1"

pytestmark = pytest.mark.needs("root", "cgroups", "user_env")


def hub_yaml(lms: PeerLMS) -> str:
    courses = f"""\
        - name: ds
          title: Data Science
          instructors: [prof]
          tas: [tina]
          students: [sa, sb, sc, sd, se]
          lms_context: {CONTEXT}
        - name: other
          students: [so]
        """
    return lti_hub_yaml(H, PASSWORD, lms, courses, admins=("boss",))


COURSE = LinkedCourse(H, PASSWORD, "ds", "canvas", CONTEXT, SUBS, hub_yaml)


def source_folder(root: Path) -> Path:
    """An nbgrader-style assignment: one solution cell, one autograded test cell (2 points), due in a week."""
    due = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).isoformat()
    cells = [
        nbformat.v4.new_markdown_cell("Write `square(x)`."),
        solution_cell("square", "def square(x):\n    return x * x"),
        graded_cell("test_square", 2, "assert square(3) == 9", "assert square(-2) == 4", locked=True),
    ]
    folder = write_source(
        root / "hw1-source", f"name: {ASSIGNMENT}\ntitle: Squares\ndue: {due}\n", cells, "squares.ipynb"
    )
    (folder / "data.csv").write_text("x\n3\n")
    return folder


call = COURSE.exchange


def files_body(files: dict[str, bytes]) -> dict[str, Any]:
    return {"files": {path: base64.b64encode(data).decode() for path, data in files.items()}}


CLI = f"{USER_ENV}/bin/hubfleet-assignment"

STUDENT_SESSION = f"""
import json, os, subprocess
home = os.path.expanduser("~")
path = os.path.join(home, "ds", "{ASSIGNMENT}", "squares.ipynb")

def cli(*args):
    result = subprocess.run(["{CLI}", *args], capture_output=True, text=True, cwd=home)
    return [result.returncode, result.stdout + result.stderr]

def answer(body):
    notebook = json.load(open(path))
    cell = next(c for c in notebook["cells"] if c["metadata"].get("nbgrader", {{}}).get("grade_id") == "square")
    cell["source"] = "def square(x):\\n    return " + body
    json.dump(notebook, open(path, "w"))

steps = {{"fetch": cli("fetch", "ds", "{ASSIGNMENT}"), "again": cli("fetch", "ds", "{ASSIGNMENT}")}}
steps["notebook"] = open(path).read()
answer("x + x")  # wrong: square(3) == 6
steps["first"] = cli("submit", "ds", "{ASSIGNMENT}")
answer("x ** 2")
steps["second"] = cli("submit", "ds", "{ASSIGNMENT}")
print(json.dumps(steps))
"""


def student_session(fleet: RunningFleet, user: str) -> dict[str, Any]:
    """In `user`'s own server (started if needed), in a kernel: fetch (twice), answer wrongly and submit, answer
    rightly and submit again, all with `hubfleet-assignment`."""
    login = TokenLogin(user, fleet.token(H, user))
    return json.loads(fleet.run_code(H, login, STUDENT_SESSION))  # type: ignore[arg-type]


def in_server(fleet: RunningFleet, user: str, *args: str) -> list:
    """`hubfleet-assignment ARGS` in `user`'s server: [exit status, output]."""
    code = (
        f"import subprocess, json; r = subprocess.run({[CLI, *args]!r}, capture_output=True, text=True); "
        "print(json.dumps([r.returncode, r.stdout + r.stderr]))"
    )
    return json.loads(fleet.run_code(H, TokenLogin(user, fleet.token(H, user)), code))  # type: ignore[arg-type]


def wait_for_grading(fleet: RunningFleet, timeout: float = 300) -> dict[str, Any]:
    """The gradebook once the service's grading job has finished."""
    deadline = time.monotonic() + timeout
    while True:
        book = call(fleet, "prof", "GET", f"api/courses/ds/assignments/{ASSIGNMENT}/grades").raise_for_status().json()
        if book["grading"] in ("done", "failed") or time.monotonic() > deadline:
            assert book["grading"] == "done", book
            return book
        time.sleep(1)


def test_source_to_lms_score(fleet: RunningFleet, lms: PeerLMS, tmp_path: Path) -> None:
    """release → fetch (in the student's server) → submit twice → collect → autograde → feedback → LMS score."""
    base = f"api/courses/ds/assignments/{ASSIGNMENT}"
    released = fleet.cli("assignment", "release", H, "ds", str(source_folder(tmp_path)), "--by", "prof")
    assert "released ds/hw1: 2 points" in released.stdout

    listed = call(fleet, "sa", "GET", "api/courses/ds/assignments").raise_for_status().json()
    assert [a["name"] for a in listed["assignments"]] == [ASSIGNMENT]

    steps = student_session(fleet, "sa")
    assert steps["fetch"][0] == 0 and "fetched ds/hw1: 2 file(s)" in steps["fetch"][1], steps
    assert steps["again"][0] == 1 and "exists already" in steps["again"][1]  # never over the student's work
    notebook = steps["notebook"]
    assert "NotImplementedError" in notebook and "HIDDEN" not in notebook and "square(-2)" not in notebook
    assert steps["first"][0] == 0 and "submitted ds/hw1 at" in steps["first"][1], steps
    assert steps["second"][0] == 0, steps

    # sb submits the student version untouched, straight through the REST API.
    release = call(fleet, "sb", "GET", f"{base}/release").raise_for_status().json()
    files = {path: base64.b64decode(text) for path, text in release["files"].items()}
    submitted = call(fleet, "sb", "POST", f"{base}/submissions", json=files_body(files))
    assert submitted.status_code == 201 and submitted.json()["late"] is False

    history = call(fleet, "sa", "GET", f"{base}/submissions").json()["submissions"]
    assert [s["student"] for s in history] == ["sa", "sa"]  # both kept; students see only their own
    assert history[0]["sha256"] != history[1]["sha256"]

    assert "collected 2 submission(s)" in fleet.cli("assignment", "collect", H, "ds", ASSIGNMENT).stdout
    graded = fleet.cli("assignment", "grade", H, "ds", ASSIGNMENT).stdout
    assert "graded 2 submission(s)" in graded, graded
    started = call(fleet, "prof", "POST", f"{base}/grade")  # the service's grading: finds nothing left to do
    assert started.status_code == 202
    book = wait_for_grading(fleet)

    totals = {row["student"]: row["total"] for row in book["students"]}
    assert totals == {"sa": 2.0, "sb": 0.0}, book  # the later submission counts
    csv_text = call(fleet, "tina", "GET", f"{base}/grades.csv").raise_for_status().text
    assert csv_text.splitlines()[0].startswith("student,submitted_at,late,graded,squares.ipynb:test_square")
    # The operator's tables as an 80-column terminal shows them: every line fits, every number whole.
    tables = {
        "course": ("status", H, "ds"),
        "students": ("status", H, "ds", ASSIGNMENT),
        "gradebook": ("grades", H, "ds"),
        "grades": ("grades", H, "ds", ASSIGNMENT),
    }
    shown = {
        key: hubfleet("assignment", *args, "--state-dir", str(fleet.state_dir), columns=80).stdout
        for key, args in tables.items()
    }
    assert all(max(map(len, text.splitlines())) <= 80 and "…" not in text for text in shown.values()), shown
    assert f"│ {ASSIGNMENT} " in shown["course"], shown["course"]
    assert "2 / 2" in shown["students"] and "0 / 2" in shown["students"], shown["students"]
    assert "2 / 2" in shown["gradebook"] and "0 / 2" in shown["gradebook"], shown["gradebook"]
    assert "│ sa " in shown["grades"] and "100%" in shown["grades"], shown["grades"]

    assert "feedback pages made for 2 student(s)" in fleet.cli("assignment", "feedback", H, "ds", ASSIGNMENT).stdout
    page = call(fleet, "sa", "GET", f"{base}/feedback")
    assert page.status_code == 200 and "Score: 2 / 2" in page.text
    assert "sandbox" in page.headers["Content-Security-Policy"]
    saved = in_server(fleet, "sa", "feedback", "ds", ASSIGNMENT)
    assert saved[0] == 0 and "feedback saved in" in saved[1], saved
    peek = call(fleet, "sb", "GET", f"{base}/feedback", params={"student": "sa"})
    assert peek.status_code == 403

    sent = fleet.cli("assignment", "passback", H, "ds", ASSIGNMENT)
    assert "2 changed score(s), 2 delivered, 0 pending" in sent.stdout, sent.stdout + sent.stderr
    (item,) = lms.line_items(CONTEXT)
    assert item["resourceId"] == ASSIGNMENT and item["scoreMaximum"] == 2
    scores = {s["userId"]: s for s in lms.scores(CONTEXT)}
    assert scores["lms-sa"]["scoreGiven"] == 2 and scores["lms-sb"]["scoreGiven"] == 0
    assert scores["lms-sa"]["gradingProgress"] == "FullyGraded"

    posted = len(lms.scores(CONTEXT))
    resent = call(fleet, "prof", "POST", f"{base}/passback").raise_for_status().json()
    assert (resent["queued"], resent["delivered"], resent["pending"]) == (0, 0, 0)
    assert len(lms.scores(CONTEXT)) == posted  # an unchanged score is not posted again


def test_permissions(fleet: RunningFleet) -> None:
    base = f"api/courses/ds/assignments/{ASSIGNMENT}"
    assert call(fleet, "so", "GET", f"{base}/release").status_code == 403  # another course's student
    assert call(fleet, "so", "GET", "api/courses/ds/assignments").status_code == 403
    assert call(fleet, "sa", "POST", f"{base}/collect").status_code == 403  # students do not collect
    assert call(fleet, "sa", "GET", f"{base}/grades").status_code == 403
    assert call(fleet, "sa", "POST", f"{base}/passback").status_code == 403
    assert call(fleet, "prof", "POST", f"{base}/submissions", json=files_body({"a": b"1"})).status_code == 403
    assert call(fleet, None, "GET", f"{base}/release").status_code == 403
    assert call(fleet, "tina", "GET", f"{base}/grades").status_code == 200  # a TA of the course
    assert call(fleet, "tina", "POST", f"{base}/collect").status_code == 200
    # Bad input is a 4xx with a message, never a 500.
    assert call(fleet, "sa", "GET", "api/courses/ds/assignments/nope/release").status_code == 404
    for body in (b"not json", b'{"files": 3}', b'{"files": {"a": "!!"}}', b'{"files": {"../x": "MQ=="}}'):
        refused = call(fleet, "sa", "POST", f"{base}/submissions", content=body)
        assert refused.status_code == 400 and refused.json()["error"], body
    bad_score = call(fleet, "prof", "PUT", f"{base}/grades/sa", json={"notebook": "squares.ipynb", "cell": "x"})
    assert bad_score.status_code == 400
    # A browser without a session is sent to log in through the hub (OAuth).
    index = httpx.get(fleet.service_url(H, SERVICE_NAME), timeout=30)
    assert index.status_code == 302 and "oauth2/authorize" in index.headers["Location"]


def test_upload_too_large(fleet: RunningFleet) -> None:
    base = f"api/courses/ds/assignments/{ASSIGNMENT}/submissions"
    huge = call(fleet, "sa", "POST", base, json=files_body({"big.bin": b"\0" * (DEFAULT_MAX_UPLOAD_BYTES + 1)}))
    assert huge.status_code == 413, huge.text
    # A body declared larger than the limit is refused before it is read (asked of the service directly: a proxy
    # in between may wait for a body that never comes).
    settings = ExchangeSettings.read(fleet.state_dir / "hubs" / H / SETTINGS_FILE)
    host, port = settings.address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", f"{settings.prefix}{base}")
    connection.putheader("Authorization", f"token {fleet.token(H, 'sa')}")
    connection.putheader("Content-Length", str(10**10))
    connection.endheaders()
    declared = connection.getresponse()
    assert declared.status == 413
    connection.close()


def test_lms_down_queues_scores(fleet: RunningFleet, lms: PeerLMS) -> None:
    """Scores changed while the LMS is down stay in the outbox; the exchange delivers them when it is back."""
    before = len(lms.scores(CONTEXT))
    override = {"notebook": "squares.ipynb", "cell": "test_square", "score": 1, "comment": "half, see feedback"}
    changed = call(fleet, "prof", "PUT", f"api/courses/ds/assignments/{ASSIGNMENT}/grades/sb", json=override)
    assert changed.status_code == 200 and changed.json()["score"] == 1
    lms.set_down(True)
    try:
        queued = fleet.cli("assignment", "passback", H, "ds", ASSIGNMENT, check=False)
        assert queued.returncode == 2 and "1 pending" in queued.stdout, queued.stdout + queued.stderr
        assert len(lms.scores(CONTEXT)) == before
    finally:
        lms.set_down(False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(lms.scores(CONTEXT)) == before:
        time.sleep(1)
    scores = [s for s in lms.scores(CONTEXT) if s["userId"] == "lms-sb"]
    assert scores[-1]["scoreGiven"] == 1  # delivered by the exchange service's loop
    assert len(lms.scores(CONTEXT)) == before + 1
    resent = call(fleet, "prof", "POST", f"api/courses/ds/assignments/{ASSIGNMENT}/passback").json()
    assert (resent["queued"], resent["delivered"], resent["pending"]) == (0, 0, 0)
    assert len(lms.scores(CONTEXT)) == before + 1


def test_killed_grading_resumes(fleet: RunningFleet) -> None:
    """The grader killed mid-batch (its whole process group) loses nothing: the next run grades the rest, once."""
    base = f"api/courses/ds/assignments/{ASSIGNMENT}"
    release = call(fleet, "sc", "GET", f"{base}/release").raise_for_status().json()
    late_comers = ["sc", "sd", "se"]
    for student in late_comers:
        call(fleet, student, "POST", f"{base}/submissions", json=release).raise_for_status()
    call(fleet, "tina", "POST", f"{base}/collect").raise_for_status()
    sessions = open_database(HubSettings.read(fleet.state_dir / "hubs" / H / "settings.json").database_url)

    def graded() -> list[int]:
        with sessions() as session:
            query = select(Grading.submission_id).join(Submission).where(Submission.student.in_(late_comers))
            return list(session.scalars(query))

    command = [sys.executable, "-m", "hubfleet", "assignment", "grade", H, "ds", ASSIGNMENT, "--workers", "1"]
    grader = subprocess.Popen([*command, "--state-dir", str(fleet.state_dir)], start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        # One submission takes ~0.1 s to grade on a quiet machine: look often, to stop the grader after the first.
        while not graded() and grader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        os.killpg(grader.pid, signal.SIGKILL)
        grader.wait()
    before = graded()
    assert 1 <= len(before) < len(late_comers), "the grader was not stopped mid-batch"
    resumed = fleet.cli("assignment", "grade", H, "ds", ASSIGNMENT).stdout
    assert f"graded {len(late_comers) - len(before)} submission(s)" in resumed, resumed
    after = graded()
    assert len(after) == len(set(after)) == len(late_comers) and set(before) <= set(after)
    with sessions() as session:  # the same cells graded for each: none lost, none twice
        cells = Counter(session.scalars(select(Grade.submission_id).where(Grade.submission_id.in_(after))))
    assert set(cells) == set(after) and len(set(cells.values())) == 1


def instant_source(root: Path) -> Path:
    """An assignment with instant feedback: a visible test with hidden parts, a visible test, a hidden-only test."""
    cells = [
        solution_cell("double", "def double(x):\n    return 2 * x"),
        graded_cell("visible", 1, "assert double(2) == 4", "assert double(-3) == -6", locked=True),
        graded_cell("zero", 1, "assert double(0) == 0", locked=True),
        graded_cell("hidden_only", 1, "", "assert double(100) == 200", locked=True),
    ]
    return write_source(
        root / "hw2-source", "name: hw2\ntitle: Doubling\ninstant_feedback: true\n", cells, "doubling.ipynb"
    )


def submit_answer(fleet: RunningFleet, student: str, body: str) -> dict[str, Any]:
    base = "api/courses/ds/assignments/hw2"
    release = call(fleet, student, "GET", f"{base}/release").raise_for_status().json()
    notebook = json.loads(base64.b64decode(release["files"]["doubling.ipynb"]))
    for cell in notebook["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "double":
            cell["source"] = f"def double(x):\n    return {body}"
    files = {"doubling.ipynb": json.dumps(notebook).encode()}
    return call(fleet, student, "POST", f"{base}/submissions", json=files_body(files)).raise_for_status().json()


def wait_for_check(fleet: RunningFleet, student: str, submission: int, timeout: float = 60) -> dict[str, Any]:
    path = f"api/courses/ds/assignments/hw2/submissions/{submission}/check"
    deadline = time.monotonic() + timeout
    while True:
        check = call(fleet, student, "GET", path).raise_for_status().json()
        if check["state"] not in ("queued", "running") or time.monotonic() > deadline:
            return check
        time.sleep(0.05)


def test_instant_feedback_shows_visible_tests_only(
    fleet: RunningFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Released with instant feedback: a submission's visible tests are graded at once by the exchange's warm
    grader; hidden tests never run (the answer below fails them), hidden-only test cells are left out; each student
    is rate-limited and sees only their own checks."""
    released = fleet.cli("assignment", "release", H, "ds", str(instant_source(tmp_path)), "--by", "prof")
    assert "released ds/hw2: 3 points" in released.stdout
    receipt = submit_answer(fleet, "sc", "abs(x) * 2")  # right for x >= 0 only: the hidden test would fail
    assert receipt["check"] == "queued"
    check = wait_for_check(fleet, "sc", receipt["id"])
    assert check["state"] == "done", check
    (cells,) = check["results"].values()
    assert {c["cell"]: (c["points"], c["status"]) for c in cells} == {
        "visible": (1.0, "passed"),
        "zero": (1.0, "passed"),
    }
    assert (check["total"], check["max_total"]) == (2.0, 2.0)
    assert "-6" not in json.dumps(check) and "200" not in json.dumps(check)
    assert (
        call(fleet, "sd", "GET", f"api/courses/ds/assignments/hw2/submissions/{receipt['id']}/check").status_code == 403
    )

    wrong = submit_answer(fleet, "sd", "x + 3")  # wrong on the visible tests too
    check = wait_for_check(fleet, "sd", wrong["id"])
    assert {c["cell"]: c["status"] for c in next(iter(check["results"].values()))} == {
        "visible": "failed",
        "zero": "failed",
    }
    states = [submit_answer(fleet, "sd", "2 * x")["check"] for _ in range(6)]
    assert states == ["queued"] * 5 + ["refused"]  # 6 checks per minute: the 1st above and 5 more
    refused = wait_for_check(
        fleet,
        "sd",
        call(fleet, "sd", "GET", "api/courses/ds/assignments/hw2/submissions").json()["submissions"][-1]["id"],
    )
    assert refused["state"] == "refused" and "at most 6 checks per 60 s" in refused["message"]

    from hubfleet.edu.exchange import student as student_command  # the students' command, against the service

    monkeypatch.setenv("HUBFLEET_EXCHANGE_URL", fleet.service_url(H, SERVICE_NAME))
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", fleet.token(H, "sc"))
    assert student_command.main(["check", "ds", "hw2"]) == 0
    assert "visible tests: 2 / 2 points" in capsys.readouterr().out
