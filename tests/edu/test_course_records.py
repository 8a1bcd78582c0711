"""A course's records are never lost: its instructors export grades and submissions (the exchange service's
export, `hubfleet assignment export`), and a passback still pending when the fleet is backed up reaches the LMS
after the fleet is restored on a fresh state directory.

Real parts: a hub with two courses and LTI, its exchange service, the sandboxed autograder, the LMS peer
(lti1p3platform, tests/lms/peer.py). What an LTI launch records (students' LMS ids, the course's AGS line items)
is written with the functions the launch uses, as in test_exchange.py; the tests run in file order.
"""

from __future__ import annotations

import base64
import csv
import io
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.helpers import RunningFleet, hubfleet, unique_hub, wait_until, wipe_hub
from tests.lms.courses import LinkedCourse, answered, source
from tests.lms.peer import PeerLMS

pytestmark = pytest.mark.needs("root", "cgroups", "user_env")

H = unique_hub("nlc")
PASSWORD = "records-test-pw"
CONTEXT = "ctx-stats"
LMS_IDS = {"sa": "lms-sa", "sb": "lms-sb"}


def hub_yaml(lms: PeerLMS) -> str:
    return textwrap.dedent(
        f"""\
        {H}:
          auth: {{type: shared-password, password: {PASSWORD}}}
          culling: {{enabled: false}}
          courses:
            - {{name: stats, instructors: [prof], tas: [tina], students: [sa, sb], lms_context: {CONTEXT}}}
            - {{name: other, instructors: [oprof], students: [so]}}
          lti:
            platforms:
        """
    ) + lms.platform_yaml(indent=6)


COURSE = LinkedCourse(H, PASSWORD, "stats", "moodle", CONTEXT, LMS_IDS, hub_yaml)
call = COURSE.exchange


def archive(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as opened:
        assert opened.testzip() is None
        return {name: opened.read(name) for name in opened.namelist()}


def rows(text: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.decode())))


def test_instructors_export_grades_and_submissions(fleet: RunningFleet, tmp_path: Path) -> None:
    fleet.cli("assignment", "release", H, "stats", str(source(tmp_path)), "--by", "prof")
    released = call(fleet, "sa", "GET", "api/courses/stats/assignments/means/release").raise_for_status().json()
    base = "api/courses/stats/assignments/means/submissions"
    for student, body in [("sa", "0"), ("sa", "sum(xs) / len(xs)"), ("sb", "max(xs)")]:
        call(fleet, student, "POST", base, json=answered(released["files"], body)).raise_for_status()
    fleet.cli("assignment", "collect", H, "stats", "means")
    assert "graded 2 submission(s)" in fleet.cli("assignment", "grade", H, "stats", "means").stdout

    response = call(fleet, "prof", "GET", "api/courses/stats/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip" and "content-length" not in response.headers
    files = archive(response.content)
    summary = {row["student"]: row for row in rows(files["stats/grades.csv"])}
    assert (summary["sa"]["total"], summary["sb"]["total"], summary["sa"]["max_score"]) == ("1", "0", "1")
    book = call(fleet, "tina", "GET", "api/courses/stats/assignments/means/grades.csv").raise_for_status()
    assert files["stats/means/grades.csv"] == book.content  # the gradebook, as the exchange serves it
    index = rows(files["stats/submissions.csv"])
    assert sorted((row["student"], row["counts"]) for row in index) == [
        ("sa", "False"),
        ("sa", "True"),
        ("sb", "True"),
    ]
    for row in index:  # every submission's files, byte for byte as the exchange keeps them
        kept = call(fleet, "prof", "GET", f"{base}/{row['submission']}").raise_for_status().json()["files"]
        for path, text in kept.items():
            assert files[f"stats/{row['folder']}/{path}"] == base64.b64decode(text)

    # Course staff only: a TA may, a student or another course's instructor may not.
    assert call(fleet, "tina", "GET", "api/courses/stats/export").status_code == 200
    for outsider in ("sa", "oprof", None):
        assert call(fleet, outsider, "GET", "api/courses/stats/export").status_code == 403, outsider

    # The operator's command writes the same archive.
    written = tmp_path / "stats.zip"
    fleet.cli("assignment", "export", H, "stats", "--to", str(written))
    assert archive(written.read_bytes()) == files
    refused = fleet.cli("assignment", "export", H, "stats", "--max-bytes", "10", check=False)
    assert refused.returncode == 1 and "more than one export may hold" in refused.stderr


def test_pending_passback_is_delivered_after_a_restore(fleet: RunningFleet, lms: PeerLMS, tmp_path: Path) -> None:
    lms.set_down(True)
    try:
        queued = fleet.cli("assignment", "passback", H, "stats", "means", check=False)
        assert queued.returncode == 2 and "2 pending" in queued.stdout, queued.stdout + queued.stderr
        backups = tmp_path / "backups"
        fleet.cli("backup", "--to", str(backups))
        fleet.cli("down")
        wipe_hub(fleet, H)
        restored = tmp_path / "restored-state"
        hubfleet("restore", str(backups), "--state-dir", str(restored))
    finally:
        lms.set_down(False)
    try:
        hubfleet("up", str(fleet.file), "--state-dir", str(restored), "--detach")
        # The restored exchange's delivery loop finds the outbox as it was and delivers it.
        wait_until(lambda: len(lms.scores(CONTEXT)) >= 2, 120, "the pending scores at the LMS")
        scores = {score["userId"]: score["scoreGiven"] for score in lms.scores(CONTEXT)}
        assert scores == {"lms-sa": 1, "lms-sb": 0}
    finally:
        hubfleet("down", "--state-dir", str(restored), check=False)
