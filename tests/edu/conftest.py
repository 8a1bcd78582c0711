"""Fixtures of the course tests: a fresh fleet database, and for a module that names a `COURSE`
(tests/lms/courses.py's LinkedCourse) its LMS peer and its real fleet, the course linked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.db import default_url, open_database
from tests.helpers import RunningFleet, running_fleet
from tests.lms.courses import LinkedCourse, link_course, peer_with_course
from tests.lms.peer import PeerLMS


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    """A fresh fleet database (SQLite in the test's folder, migrated)."""
    return open_database(default_url(tmp_path))


@pytest.fixture(scope="module")
def lms(request: pytest.FixtureRequest) -> Iterator[PeerLMS]:
    """The LMS peer of the module's `COURSE`, its course and learners in place."""
    course: LinkedCourse = request.module.COURSE
    with peer_with_course(course.lms, course.context, course.students) as peer:
        yield peer


@pytest.fixture(scope="module")
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, lms: PeerLMS
) -> Iterator[RunningFleet]:
    """A real fleet with the module's `COURSE` hub, its course linked to the LMS peer's."""
    course: LinkedCourse = request.module.COURSE
    with running_fleet(
        tmp_path_factory.mktemp(course.hub), course.hub_yaml(lms), [course.hub], course.password
    ) as running:
        link_course(running, course.hub, course.course, lms, course.context, course.students, nrps=course.nrps)
        yield running
