"""Instant feedback's bounds, on the exchange's real graders (no hub needed): the per-hub concurrency cap (checks of
one grader never overlap), the waiting line (more than it holds are refused as busy), and that a failing check does
not stop the grader. Real sandboxes (root, cgroups, the user environment). End to end on a hub: test_exchange.py."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import nbformat
import pytest

from hubfleet.db import open_database
from hubfleet.edu.assignments import generate, load_source
from hubfleet.edu.exchange.instant import InstantGrader, InstantLimits
from hubfleet.edu.exchange.store import Exchange
from hubfleet.edu.exchange.tables import Check
from hubfleet.edu.exchange.workflow import read_folder
from tests.edu.sources import graded_cell, nbgrader, write_source

pytestmark = pytest.mark.needs("root", "cgroups", "user_env")


@pytest.fixture
def exchange(tmp_path: Path) -> Exchange:
    """An exchange with one assignment (instant feedback on): a slow-ish visible test."""
    cells = [
        nbformat.v4.new_code_cell("import time\nDELAY = 0.3", metadata=nbgrader(solution=True, grade_id="answer")),
        graded_cell("t", 1, "time.sleep(DELAY)\nassert DELAY < 1"),
    ]
    config = "name: hw\ntitle: Waiting\ninstant_feedback: true\n"
    source = write_source(tmp_path / "source", config, cells, "hw.ipynb")
    spec = generate(load_source(source), tmp_path / "release")
    exchange = Exchange(open_database(f"sqlite:///{tmp_path / 'fleet.sqlite'}"), "gr-instant")
    exchange.release(
        "gr1",
        "hw",
        read_folder(tmp_path / "release"),
        grading_spec=spec.model_dump(mode="json"),
        max_score=spec.max_total,
        due=None,
        late_policy={},
        by="prof",
        max_bytes=2**20,
    )
    return exchange


def submit(exchange: Exchange, student: str, answer: str) -> int:
    files = exchange.release_files("gr1", "hw")
    nb = json.loads(files["hw.ipynb"])
    nb["cells"][0]["source"] = answer
    return exchange.submit("gr1", "hw", student, {"hw.ipynb": json.dumps(nb).encode()}, max_bytes=2**20).id


def checks(exchange: Exchange, ids: list[int], timeout: float = 120) -> dict[int, Check]:
    deadline = time.monotonic() + timeout
    while True:
        with exchange.sessions() as session:
            found = {i: session.get(Check, i) for i in ids}
        if all(c is not None and c.state not in ("queued", "running") for c in found.values()):
            return found
        assert time.monotonic() < deadline, {i: c.state if c else None for i, c in found.items()}
        time.sleep(0.05)


def test_one_grader_checks_one_submission_at_a_time_and_refuses_when_full(exchange: Exchange) -> None:
    grader = InstantGrader(exchange, InstantLimits(workers=1, queue_size=3, per_student=100))
    try:
        ids = [submit(exchange, f"s{i}", "import time\nDELAY = 0.3") for i in range(5)]
        states = [grader.request("gr1", "hw", f"s{i}", submission) for i, submission in enumerate(ids)]
        assert states.count("queued") >= 3 and "refused" in states  # the line holds 3 (one may be taken already)
        done = checks(exchange, ids)
        graded = sorted((c.finished_at, c.seconds) for c in done.values() if c.state == "done")
        assert len(graded) == states.count("queued")
        for (end, _), (next_end, next_seconds) in itertools.pairwise(graded):
            assert (next_end - end).total_seconds() >= next_seconds * 0.9  # one after the other, never at once
        refused = [c for c in done.values() if c.state == "refused"]
        assert refused and all("busy" in c.message for c in refused)
        broken = submit(exchange, "s9", "import os\nos._exit(3)")  # the notebook's process dies: a result still
        grader.request("gr1", "hw", "s9", broken)
        after = checks(exchange, [broken])[broken]
        assert after.state == "done" and after.total == 0 and "exited" in after.message
    finally:
        grader.close()
