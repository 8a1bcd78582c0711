"""How a course maps onto JupyterHub and the machine: the staff role, group properties, the course folder.

Pure derivations (no JupyterHub import), shared by the fleet side (hub config, `hubfleet course`) and the hub side
(spawner, LTI authenticator); the names of a course's groups are part of the spec (`hubfleet.spec.edu`). A course
``c`` is three JupyterHub groups (``c-instructors``, ``c-tas``, ``c-students``) and one role (``course-c-staff``)
granted to the first two, whose scopes reach the servers of the members of ``c-students`` and nobody else's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hubfleet.spec.edu import COURSE_ROLES, COURSES_FOLDER, check_course, check_role, course_groups, group_name

if TYPE_CHECKING:
    from hubfleet.spec.edu import Course

STAFF_ROLES = ("instructor", "ta")
"""Roles that manage the course's students' servers and write the course folder."""

ROLE_NAME_PREFIX = "course-"
ROLE_NAME_SUFFIX = "-staff"


def staff_role_name(course: str) -> str:
    """The name of `course`'s staff role: `course-<course>-staff`."""
    check_course(course)
    return f"{ROLE_NAME_PREFIX}{course}{ROLE_NAME_SUFFIX}"


def staff_scopes(course: str) -> list[str]:
    """What `course`'s staff may do: see the course's groups, list and read its students, and read, start, stop
    and open (access) their servers. Every scope is filtered to the course's groups (JupyterHub `!group=`)."""
    students = f"group={group_name(course, 'student')}"
    scopes = [
        f"list:users!{students}",
        f"read:users!{students}",
        f"servers!{students}",  # read:servers, start:servers, delete:servers
        f"access:servers!{students}",
    ]
    scopes += [f"read:groups!group={group}" for group in course_groups(course).values()]
    scopes.append("admin-ui")  # the admin page, showing (and acting on) only what the scopes above allow
    return scopes


def staff_role(course: str) -> dict[str, Any]:
    """The JupyterHub role definition (for `load_roles` or `roles.create_role`) of `course`'s staff."""
    return {
        "name": staff_role_name(course),
        "description": f"Staff of course {course}: manage the servers of its students",
        "scopes": staff_scopes(course),
        "groups": [group_name(course, role) for role in STAFF_ROLES],
    }


def course_folder_path(shared_root: Path | str, hub: str, course: str) -> Path:
    """The course's shared folder: `<shared_root>/<hub>/courses/<course>`."""
    check_course(course)
    return Path(shared_root) / hub / COURSES_FOLDER / course


def folder_access(unix_group: Callable[[str], str], course: str) -> dict[str, Literal["read", "write"]]:
    """Unix group → access of `course`'s folder: students read, staff write (`unix_group(group)` names the POSIX
    group of a hub group, e.g. `functools.partial(accounts.unix_groupname, hub)`)."""
    return {unix_group(group_name(course, role)): "write" if role in STAFF_ROLES else "read" for role in COURSE_ROLES}


def group_properties(course: Course, role: str) -> dict[str, Any]:
    """The JupyterHub group properties of the fleet file's `course`'s group for `role`.

    The same keys as a course created at run time (`hubfleet.hub.courses.ensure_course`): `course`, `role`, and
    what the hub side needs to know about the course without the fleet file: `title`, `lti_context`, `roster`,
    `profile`, `folder`, `content` (its git repository); `origin` says where the course was defined.
    """
    check_role(role)
    properties: dict[str, Any] = {
        "course": course.name,
        "role": role,
        "origin": "fleet-file",
        "roster": course.roster,
        "folder": course.folder,
    }
    for key, value in (("title", course.title), ("lti_context", course.lms_context), ("profile", course.profile)):
        if value is not None:
            properties[key] = value
    if course.content is not None:
        properties["content"] = course.content.model_dump(exclude_none=True)
    return properties


def members_by_role(course: Course) -> dict[str, list[str]]:
    """Role → the members the fleet file names for it."""
    return {"instructor": list(course.instructors), "ta": list(course.tas), "student": list(course.students)}


def fleet_file_groups(courses: list[Course]) -> dict[str, list[str]]:
    """Group name → members, for the groups of the fleet file's `courses`."""
    return {
        group_name(course.name, role): members
        for course in courses
        for role, members in members_by_role(course).items()
    }


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def meeting_times(course: Course, around: dt.datetime, days: int = 8) -> list[tuple[dt.datetime, dt.datetime]]:
    """(start, end) of `course`'s weekly meetings from the day before `around` to `days` days after, in order
    (naive local times of this machine, as the schedule is written)."""
    today = around.replace(tzinfo=None).date()
    found = []
    for offset in range(-1, days):
        date = today + dt.timedelta(days=offset)
        for meeting in course.schedule:
            if WEEKDAYS.index(meeting.day) == date.weekday():
                found.append((dt.datetime.combine(date, meeting.start), dt.datetime.combine(date, meeting.end)))
    return sorted(found)


def next_prewarm(course: Course, now: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """(when servers are started, the meeting's start) of the course's next pre-warm, None without one."""
    if not course.prewarm.enabled:
        return None
    lead = dt.timedelta(seconds=course.prewarm.lead)
    for start, _ in meeting_times(course, now):
        if start > now.replace(tzinfo=None):
            return start - lead, start
    return None
