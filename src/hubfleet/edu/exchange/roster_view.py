"""A course's roster as its staff see it: every member with their role, where they came from (the fleet file, the
LMS, or added on the hub), their server's state and last activity, and their submissions; with the course's LMS
link and its last roster sync. Read from the hub (its REST API, as the exchange service) and the fleet database."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.common.hubapi import HubAPI
from hubfleet.edu.course_store import FLEET_FILE_SOURCE, CourseView, load_courses
from hubfleet.edu.exchange.lms import course_link
from hubfleet.edu.exchange.store import Exchange, NotFound
from hubfleet.edu.exchange.tables import Assignment, LmsCourse, RosterSync, Submission
from hubfleet.edu.lti.tables import Identity
from hubfleet.edu.roster import last_sync
from hubfleet.spec.edu import COURSE_ROLES, Course

LMS_SOURCE = "LMS"
ADDED_SOURCE = "added on the hub"


@dataclass
class RosterRow:
    """One member of the course."""

    user: str
    role: str
    source: str  # FLEET_FILE_SOURCE, LMS_SOURCE or ADDED_SOURCE
    server: str  # running, starting, stopping, stopped
    last_activity: dt.datetime | None = None
    submissions: int = 0  # every submission, every assignment
    assignments: int = 0  # assignments with at least one submission


@dataclass
class CourseRoster:
    """The course's members (staff first, then students, by name), its LMS link and last roster sync."""

    course: CourseView
    rows: list[RosterRow] = field(default_factory=list)
    link: LmsCourse | None = None
    last_sync: RosterSync | None = None


def _server_state(model: dict[str, Any] | None) -> str:
    server = ((model or {}).get("servers") or {}).get("")
    if not server:
        return "stopped"
    if server.get("ready"):
        return "running"
    return "stopping" if server.get("pending") == "stop" else "starting"


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _records(
    sessions: sessionmaker[Session], hub: str, course: str, users: list[str]
) -> tuple[set[str], dict[str, tuple[int, int]], LmsCourse | None, RosterSync | None]:
    """From the fleet database: who came from an LMS, submissions per student, the LMS link, the last sync."""
    with sessions() as session:
        from_lms = set(session.scalars(select(Identity.username).where(Identity.username.in_(users))))
        query = (
            select(Submission.student, func.count(Submission.id), func.count(func.distinct(Submission.assignment_id)))
            .join(Assignment, Assignment.id == Submission.assignment_id)
            .where(Assignment.hub == hub, Assignment.course == course)
            .group_by(Submission.student)
        )
        counts = {student: (int(count), int(assignments)) for student, count, assignments in session.execute(query)}
    return from_lms, counts, course_link(sessions, hub, course), last_sync(sessions, hub, course)


async def course_roster(api: HubAPI, exchange: Exchange, course: str, specs: list[Course]) -> CourseRoster:
    """The course's roster (NotFound when the hub has no such course). `specs`: the fleet file's courses."""
    view = (await load_courses(api, specs)).get(course)
    if view is None:
        raise NotFound(f"there is no course {course!r} on this hub")
    members = {user: role for role in reversed(COURSE_ROLES) for user in view.members.get(role, [])}
    models = {user["name"]: user async for user in api.users() if user["name"] in members}
    from_lms, counts, link, synced = await asyncio.to_thread(
        _records, exchange.sessions, exchange.hub, course, sorted(members)
    )
    roster = CourseRoster(course=view, link=link, last_sync=synced)
    for user, role in sorted(members.items(), key=lambda item: (COURSE_ROLES.index(item[1]), item[0])):
        model = models.get(user)
        if view.source(user) == FLEET_FILE_SOURCE:
            source = FLEET_FILE_SOURCE
        else:
            source = LMS_SOURCE if user in from_lms else ADDED_SOURCE
        submissions, assignments = counts.get(user, (0, 0))
        roster.rows.append(
            RosterRow(
                user=user,
                role=role,
                source=source,
                server=_server_state(model),
                last_activity=_time((model or {}).get("last_activity")),
                submissions=submissions,
                assignments=assignments,
            )
        )
    return roster
