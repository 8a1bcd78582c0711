"""The parts under the course pages, without a hub: who may do what, students' progress and the course gradebook on a
real (SQLite) fleet database, a regrade that keeps manual scores, the passback states, drafts, and source folders
from an upload or from the course folder (read safely as root). The pages themselves: test_course_pages.py."""

from __future__ import annotations

import datetime as dt
import io
import os
import time
import zipfile
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.edu.assignments import GradingSpec
from hubfleet.edu.exchange import passback, sources
from hubfleet.edu.exchange.access import Roles
from hubfleet.edu.exchange.drafts import Drafts
from hubfleet.edu.exchange.store import CellGrade, Exchange, ExchangeError, Forbidden, NotFound, TooLarge
from hubfleet.edu.exchange.tables import ScoreOut, utcnow
from hubfleet.edu.exchange.workflow import PreparedRelease

LIMIT = 10_000


@pytest.fixture
def exchange(sessions: sessionmaker[Session]) -> Exchange:
    exchange = Exchange(sessions, "hub1")
    for name in ("hw1", "hw2"):
        exchange.release(
            "ds",
            name,
            {"nb.ipynb": b"{}"},
            grading_spec={"title": name.upper()},
            max_score=4,
            due=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
            late_policy={},
            by="prof",
            max_bytes=LIMIT,
        )
    return exchange


def test_course_roles_decide_who_may_do_what() -> None:
    prof = Roles({"name": "prof", "groups": ["ds-instructors", "bio-students"]})
    tina = Roles({"name": "tina", "groups": ["ds-tas"]})
    admin = Roles({"name": "root", "admin": True, "groups": []})
    for action in ("view", "collect", "grade", "export", "release", "feedback", "passback", "roster-sync"):
        assert prof.may("ds", action)
        assert not prof.may("bio", action)  # a student there
        assert not admin.may("ds", action)  # a hub admin is no course's staff
    assert [a for a in ("view", "collect", "grade", "export") if tina.may("ds", a)] == [
        "view",
        "collect",
        "grade",
        "export",
    ]
    assert not any(tina.may("ds", a) for a in ("release", "feedback", "passback", "roster-sync"))
    with pytest.raises(Forbidden, match="only instructors of ds may send grades"):
        tina.require("ds", "passback")
    assert prof.role("ds") == "instructor" and prof.role("bio") == "student" and tina.role("bio") is None


def test_progress_counts_fetches_submissions_and_feedback(exchange: Exchange) -> None:
    exchange.release_files("ds", "hw1", fetched_by="ann")
    exchange.release_files("ds", "hw1", fetched_by="ann")
    exchange.release_files("ds", "hw1")  # staff: not recorded
    first = exchange.submit("ds", "hw1", "ann", {"nb.ipynb": b"1"}, max_bytes=LIMIT)
    exchange.collect("ds", "hw1")
    exchange.submit("ds", "hw1", "ann", {"nb.ipynb": b"2"}, max_bytes=LIMIT)  # waits for the next collect
    exchange.record_grading(first.id, [CellGrade("nb.ipynb", "q", 4, 3, "passed")])
    exchange.set_feedback(first.id, "<p>ok</p>")
    rows = {row.student: row for row in exchange.progress("ds", "hw1", ["ann", "cid"])}
    ann, cid = rows["ann"], rows["cid"]
    assert (ann.fetches, ann.submissions, ann.collected_id, ann.graded, ann.total) == (2, 2, first.id, True, 3)
    assert ann.latest_id != ann.collected_id and ann.feedback_at is not None and not ann.feedback_stale
    assert (cid.fetches, cid.submissions, cid.graded) == (0, 0, False)  # on the roster, nothing done yet
    time.sleep(0.01)
    exchange.override("ds", "hw1", "ann", "nb.ipynb", "q", 4, "tina", "")
    assert exchange.progress("ds", "hw1")[0].feedback_stale  # the grade changed after the page was made


def test_course_gradebook_and_its_csv(exchange: Exchange) -> None:
    for name, student, points in (("hw1", "ann", 4), ("hw1", "bob", 1.5), ("hw2", "ann", 2)):
        submission = exchange.submit("ds", name, student, {"nb.ipynb": b"x"}, max_bytes=LIMIT)
        exchange.collect("ds", name)
        exchange.record_grading(submission.id, [CellGrade("nb.ipynb", "q", 4, points, "passed")])
    book = exchange.course_gradebook("ds", ["ann", "bob", "cid"])
    rows = {row.student: row for row in book.rows}
    assert book.assignments == [("hw1", 4), ("hw2", 4)]
    assert rows["ann"].scores == {"hw1": 4, "hw2": 2} and rows["ann"].total == 6 and rows["ann"].max_total == 8
    assert rows["bob"].scores == {"hw1": 1.5, "hw2": None} and rows["cid"].total == 0
    assert book.csv().splitlines() == ["student,hw1,hw2,total,max_total", "ann,4,2,6,8", "bob,1.5,,1.5,8", "cid,,,0,8"]


def test_a_regrade_replaces_the_grading_and_keeps_manual_scores(exchange: Exchange) -> None:
    submission = exchange.submit("ds", "hw1", "ann", {"nb.ipynb": b"x"}, max_bytes=LIMIT)
    exchange.collect("ds", "hw1")
    cells = [CellGrade("nb.ipynb", "q", 2, 0, "failed"), CellGrade("nb.ipynb", "essay", 2, None, "manual")]
    exchange.record_grading(submission.id, cells, graded_files={"nb.ipynb": b"old"})
    exchange.override("ds", "hw1", "ann", "nb.ipynb", "essay", 2, "prof", "clear")
    regraded = [CellGrade("nb.ipynb", "q", 2, 2, "passed"), CellGrade("nb.ipynb", "essay", 1, None, "manual")]
    assert exchange.record_grading(submission.id, regraded, graded_files={"nb.ipynb": b"new"}, replace=True)
    grades = {grade.cell: grade for grade in exchange.grades(submission.id)}
    assert grades["q"].score == 2 and grades["essay"].manual_score == 1  # kept, capped at the cell's new points
    assert grades["essay"].comment == "clear" and grades["essay"].grader == "prof"
    assert exchange.graded_files(submission.id) == {"nb.ipynb": b"new"}


def test_passback_states(exchange: Exchange, sessions: sessionmaker[Session]) -> None:
    ids = {}
    for student in ("ann", "bob", "cid", "dan"):
        ids[student] = exchange.submit("ds", "hw1", student, {"nb.ipynb": b"x"}, max_bytes=LIMIT).id
    exchange.collect("ds", "hw1")
    for student in ("ann", "bob", "cid", "dan"):
        exchange.record_grading(ids[student], [CellGrade("nb.ipynb", "q", 4, 3, "passed")])
    assignment = exchange.assignment("ds", "hw1")
    now = utcnow()
    with sessions.begin() as session:
        session.add(ScoreOut(assignment_id=assignment.id, student="ann", score=3, maximum=4, updated_at=now,
                             delivered_score=3, delivered_maximum=4, delivered_at=now))  # fmt: skip
        session.add(ScoreOut(assignment_id=assignment.id, student="bob", score=3, maximum=4, updated_at=now))
        session.add(ScoreOut(assignment_id=assignment.id, student="cid", score=3, maximum=4, updated_at=now,
                             attempts=2, last_error="the LMS is unavailable: 503"))  # fmt: skip
    states = {s.student: (s.state, s.error) for s in passback.score_status(exchange, "ds", "hw1")}
    assert states == {
        "ann": ("sent", None),
        "bob": ("queued", None),
        "cid": ("failed", "the LMS is unavailable: 503"),
        "dan": ("not sent", None),
    }
    exchange.override("ds", "hw1", "ann", "nb.ipynb", "q", 4, "prof", "")
    assert passback.score_status(exchange, "ds", "hw1")[0].state == "not sent"  # changed since it was sent


def _prepared() -> PreparedRelease:
    spec = GradingSpec(assignment="hw1", title="HW 1", notebooks=())
    return PreparedRelease(spec=spec, files={"nb.ipynb": b"{}", "data/x.csv": b"1"}, due=None, late_policy={})


def test_drafts_live_for_their_course_and_a_while() -> None:
    drafts = Drafts(ttl=60, max_drafts=3)
    try:
        draft = drafts.add("ds", "prof", "upload hw1.zip", _prepared())
        again = drafts.get("ds", draft.id)
        assert again.prepared.files == _prepared().files and again.prepared.spec.title == "HW 1"
        for wrong in (("bio", draft.id), ("ds", "../" + draft.id), ("ds", "x" * 22)):
            with pytest.raises(NotFound):
                drafts.get(*wrong)
        old = time.time() - 120
        os.utime(drafts.root / draft.id, (old, old))
        with pytest.raises(NotFound):  # expired
            drafts.get("ds", draft.id)
        made = [drafts.add("ds", "prof", "x", _prepared()) for _ in range(4)]
        assert len(list(drafts.root.iterdir())) <= 3 and drafts.get("ds", made[-1].id)
        drafts.remove(made[-1].id)
        with pytest.raises(NotFound):
            drafts.get("ds", made[-1].id)
    finally:
        drafts.close()
    assert not drafts.root.exists()


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_an_upload_becomes_a_source_folder() -> None:
    zipped = _zip({"hw1/assignment.yaml": b"name: hw1", "hw1/a.ipynb": b"{}", "hw1/.git/config": b"x"})
    assert sources.files_from_upload([("hw1.zip", zipped)], max_bytes=LIMIT) == {
        "assignment.yaml": b"name: hw1",
        "a.ipynb": b"{}",
    }
    files = [("assignment.yaml", b"name: hw1"), ("data/x.csv", b"1")]
    assert sources.files_from_upload(files, max_bytes=LIMIT) == dict(files)
    with pytest.raises(ExchangeError):
        sources.files_from_upload([("x.zip", _zip({"../evil": b"x"}))], max_bytes=LIMIT)
    with pytest.raises(TooLarge):
        sources.files_from_upload([("x.zip", _zip({"big": b"0" * (LIMIT + 1)}))], max_bytes=LIMIT)
    with pytest.raises(ExchangeError, match=r"not a readable \.zip"):
        sources.files_from_upload([("x.zip", b"PK but not really")], max_bytes=LIMIT)
    with pytest.raises(ExchangeError, match="choose"):
        sources.files_from_upload([("", b"")], max_bytes=LIMIT)


def test_the_course_folder_is_read_without_following_links(tmp_path: Path) -> None:
    course = tmp_path / "courses" / "ds"
    (course / "hw1" / "data").mkdir(parents=True)
    (course / "hw1" / "assignment.yaml").write_text("name: hw1")
    (course / "hw1" / "data" / "x.csv").write_text("1")
    (course / "hw1" / ".ipynb_checkpoints").mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("root's secret")
    (course / "hw1" / "data" / "leak.csv").symlink_to(secret)
    (course / "hw1" / "outside").symlink_to(tmp_path, target_is_directory=True)
    (course / "linked").symlink_to(course / "hw1", target_is_directory=True)
    (course / "nb" / "source" / "ps1").mkdir(parents=True)
    (course / "nb" / "nbgrader_config.py").write_text("c = get_config()")
    (course / "nb" / "source" / "ps1" / "ps1.ipynb").write_text("{}")
    assert sources.assignment_folders(course) == ["hw1", "nb/source/ps1"]

    files = sources.read_course_folder(course, "hw1", max_bytes=LIMIT)
    assert files == {"hw1/assignment.yaml": b"name: hw1", "hw1/data/x.csv": b"1"}  # no link followed
    nbgrader = sources.read_course_folder(course, "nb/source/ps1", max_bytes=LIMIT)
    assert set(nbgrader) == {"nb/source/ps1/ps1.ipynb", "nb/nbgrader_config.py"}
    for refused in ("linked", "hw1/outside", "../..", "nope"):
        with pytest.raises(ExchangeError):
            sources.read_course_folder(course, refused, max_bytes=LIMIT)
    os.link(secret, course / "hw1" / "hard.csv")
    with pytest.raises(ExchangeError, match="hard link"):
        sources.read_course_folder(course, "hw1", max_bytes=LIMIT)
    (course / "hw1" / "hard.csv").unlink()
    (course / "hw1" / "big.bin").write_bytes(b"0" * LIMIT)
    with pytest.raises(TooLarge):
        sources.read_course_folder(course, "hw1", max_bytes=LIMIT)
