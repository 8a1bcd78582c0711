"""The exchange's store on a real (SQLite) fleet database, migrated by Alembic: submissions kept and immutable, the
latest counting, files stored once, grading recorded once, the gradebook with the late policy, and the outbox's
idea of what is pending. No hub needed (the running service is tested in test_exchange.py)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.db import connect, default_url
from hubfleet.edu.exchange.store import CellGrade, Exchange, ExchangeError, NotFound, TooLarge
from hubfleet.edu.exchange.tables import Blob, ScoreOut, Submission

LIMIT = 10_000


@pytest.fixture
def exchange(sessions: sessionmaker[Session]) -> Exchange:
    exchange = Exchange(sessions, "hub1")
    exchange.release(
        "ds",
        "hw1",
        {"nb.ipynb": b"{}", "data/x.csv": b"1,2\n"},
        grading_spec={"title": "HW 1"},
        max_score=4,
        due=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
        late_policy={"penalty_per_day": 0.5, "max_days_late": 3},
        by="prof",
        max_bytes=LIMIT,
    )
    return exchange


def test_every_submission_kept_latest_counts(exchange: Exchange, sessions: sessionmaker[Session]) -> None:
    first = exchange.submit("ds", "hw1", "ann", {"nb.ipynb": b"v1", "data/x.csv": b"1,2\n"}, max_bytes=LIMIT)
    second = exchange.submit("ds", "hw1", "ann", {"nb.ipynb": b"v2", "data/x.csv": b"1,2\n"}, max_bytes=LIMIT)
    exchange.submit("ds", "hw1", "bob", {"nb.ipynb": b"v2"}, max_bytes=LIMIT)
    assert [s.id for s in exchange.submissions("ds", "hw1", "ann")] == [first.id, second.id]
    assert exchange.submission_files(first.id)["nb.ipynb"] == b"v1"  # the earlier one is untouched
    assert first.sha256 != second.sha256 and not first.late
    assert {s.student: s.id for s in exchange.collect("ds", "hw1")}["ann"] == second.id
    with sessions() as session:  # {}, the data file, v1, v2: each stored once however many files carry it
        assert session.scalar(select(func.count()).select_from(Blob)) == 4
    later = exchange.submit("ds", "hw1", "ann", {"nb.ipynb": b"v3"}, max_bytes=LIMIT)
    assert {s.student: s.id for s in exchange.collected("ds", "hw1")}["ann"] == second.id  # until the next collect
    assert {s.student: s.id for s in exchange.latest("ds", "hw1")}["ann"] == later.id


def test_bad_files_refused(exchange: Exchange) -> None:
    for files in ({"../escape": b"x"}, {"/etc/passwd": b"x"}, {"a\0b": b"x"}, {}, {"a/../../b": b"x"}):
        with pytest.raises(ExchangeError) as refused:
            exchange.submit("ds", "hw1", "ann", files, max_bytes=LIMIT)
        assert refused.value.status == 400
    with pytest.raises(TooLarge):
        exchange.submit("ds", "hw1", "ann", {"big": b"x" * (LIMIT + 1)}, max_bytes=LIMIT)
    with pytest.raises(NotFound):
        exchange.submit("ds", "nope", "ann", {"a": b"x"}, max_bytes=LIMIT)
    with pytest.raises(ExchangeError):
        exchange.release("ds", "../x", {"a": b"x"}, grading_spec={}, max_score=1, due=None, late_policy={}, by="p",
                         max_bytes=LIMIT)  # fmt: skip


def test_grading_recorded_once_and_gradebook(exchange: Exchange, sessions: sessionmaker[Session]) -> None:
    ann = exchange.submit("ds", "hw1", "ann", {"nb.ipynb": b"a"}, max_bytes=LIMIT)
    bob = exchange.submit("ds", "hw1", "bob", {"nb.ipynb": b"b"}, max_bytes=LIMIT)
    exchange.collect("ds", "hw1")
    cells = [CellGrade("nb.ipynb", "q1", 2, 2, "passed"), CellGrade("nb.ipynb", "essay", 2, None, "manual")]
    assert exchange.record_grading(ann.id, cells, graded_files={"nb.ipynb": b"ran"})
    assert not exchange.record_grading(ann.id, cells)  # a resumed grader writes nothing twice
    assert exchange.graded_ids([ann.id, bob.id]) == {ann.id}
    exchange.override("ds", "hw1", "ann", "nb.ipynb", "essay", 1.5, "tina", "good argument")
    with pytest.raises(ExchangeError):
        exchange.override("ds", "hw1", "ann", "nb.ipynb", "essay", 3, "tina", "")  # over the cell's points
    rows = {row.student: row for row in exchange.gradebook("ds", "hw1")}
    assert rows["ann"].total == 3.5 and rows["ann"].graded and not rows["bob"].graded
    assert exchange.graded_files(ann.id) == {"nb.ipynb": b"ran"}
    lines = exchange.gradebook_csv("ds", "hw1").splitlines()
    assert lines[0] == "student,submitted_at,late,graded,nb.ipynb:essay,nb.ipynb:q1,raw_total,kept,total,max_score"
    assert lines[1].endswith(",True,1.5,2,3.5,1,3.5,4")


def test_late_policy_and_outbox(exchange: Exchange, sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:  # move the due date into the past: 1 started day late keeps half
        assignment = exchange._assignment(session, "ds", "hw1")
        assignment.due = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    late = exchange.submit("ds", "hw1", "ann", {"nb.ipynb": b"a"}, max_bytes=LIMIT)
    assert late.late
    exchange.collect("ds", "hw1")
    exchange.record_grading(late.id, [CellGrade("nb.ipynb", "q1", 4, 4, "passed")])
    (row,) = exchange.gradebook("ds", "hw1")
    assert (row.raw_total, row.kept, row.total) == (4, 0.5, 2)
    out = ScoreOut(assignment_id=1, student="ann", score=2, maximum=4, updated_at=dt.datetime.now(dt.UTC))
    assert out.pending
    out.delivered_score, out.delivered_maximum = 2, 4
    assert not out.pending
    with sessions() as session:
        assert session.get(Submission, late.id).submitted_at.tzinfo is dt.UTC


def _submit_many(url: str, student: str, count: int) -> None:
    exchange = Exchange(sessionmaker(connect(url), expire_on_commit=False), "hub1")
    for number in range(count):
        exchange.submit(
            "ds", "hw1", student, {"nb.ipynb": b"same", "own": f"{student}{number}".encode()}, max_bytes=LIMIT
        )


def test_concurrent_submissions_all_kept(exchange: Exchange, tmp_path: Path) -> None:
    """Students submitting at the same moment from several processes (SQLite locks): every submission is kept."""
    url = default_url(tmp_path)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_submit_many, args=(url, f"s{i}", 5)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * 4
    assert len(exchange.latest("ds", "hw1")) == 4
    assert sum(len(exchange.submissions("ds", "hw1", f"s{i}")) for i in range(4)) == 20
