"""Courses on one running hub, read and changed the same way from inside the hub and from outside it.

A course is three JupyterHub groups (`hubfleet.spec.edu.group_name`) whose properties name it. A `CourseStore` is
the hub's users and groups as the course logic needs them; two adapters give it:

- `hubfleet.common.hubapi.HubAPI` — the hub's REST API, as the fleet's service (the CLI, the console);
- `hubfleet.hub.courses.OrmCourses` — JupyterHub's own database, inside the hub (LTI launches, roster syncs).

Everything a course does on top of that — list the courses, their members by role, one person's role, the course
of an LMS context, a roster sync (`hubfleet.edu.roster`) — is written once, here, against the protocol.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hubfleet.edu.courses import next_prewarm
from hubfleet.spec.edu import COURSE_ROLES, Course, course_groups, group_name, parse_group

FLEET_FILE_SOURCE = "fleet file"
RUN_TIME_SOURCE = "run time"
"""Where a member came from: named in the fleet file, or added while the hub ran (CLI or LMS)."""


class CourseStore(Protocol):
    """The hub's users and groups, as courses need them. Groups are JupyterHub's REST models (`name`, `users`,
    `properties`)."""

    async def groups(self) -> list[dict]: ...

    async def group(self, name: str) -> dict | None: ...

    async def ensure_users(self, names: Iterable[str]) -> None: ...

    async def add_members(self, group: str, users: Iterable[str]) -> None: ...

    async def remove_members(self, group: str, users: Iterable[str]) -> None: ...


class CourseNotOnHub(LookupError):
    """The course's groups are not on the hub (define it in the fleet file, or launch it from the LMS first)."""


@dataclass
class CourseView:
    """A course as the running hub has it, with what the fleet file says about it."""

    name: str
    properties: dict[str, Any] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    """Role → members, from the hub's groups."""
    spec: Course | None = None
    """The fleet file's definition (None: created at run time)."""

    def source(self, user: str) -> str:
        """Where member `user` came from."""
        return FLEET_FILE_SOURCE if self.spec is not None and user in self.spec.members else RUN_TIME_SOURCE

    @property
    def roster(self) -> str:
        """Where the course's students come from: `fleet-file` or `lms`."""
        return self.properties.get("roster", self.spec.roster if self.spec else "lms")

    def to_dict(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": self.name,
            "title": self.properties.get("title") or (spec.title if spec else None),
            "origin": "fleet-file" if spec is not None else self.properties.get("origin", "run-time"),
            "roster": self.roster,
            "lms_context": self.properties.get("lti_context"),
            "profile": self.properties.get("profile"),
            "folder": self.properties.get("folder", True),
            "groups": course_groups(self.name),
            "members": {
                role: [{"name": user, "source": self.source(user)} for user in users]
                for role, users in self.members.items()
            },
            "schedule": [meeting.model_dump(mode="json") for meeting in spec.schedule] if spec else [],
            "next_prewarm": self.next_prewarm(),
        }

    def next_prewarm(self) -> dict[str, str] | None:
        """When the servers of the course's next meeting are started, and the meeting's start (local ISO times)."""
        found = next_prewarm(self.spec, dt.datetime.now()) if self.spec is not None else None
        if found is None:
            return None
        warm, start = found
        return {"at": warm.isoformat(timespec="minutes"), "meeting": start.isoformat(timespec="minutes")}


def course_of(group: dict) -> tuple[str, str] | None:
    """(course, role) of a course's group: its name parses and its properties name the course."""
    parsed = parse_group(group["name"])
    if parsed is None or (group.get("properties") or {}).get("course") != parsed[0]:
        return None
    return parsed


async def load_courses(store: CourseStore, specs: Iterable[Course] = ()) -> dict[str, CourseView]:
    """Every course on the hub, by name, with the fleet file's definitions (`specs`)."""
    by_name = {course.name: course for course in specs}
    views: dict[str, CourseView] = {}
    for group in await store.groups():
        parsed = course_of(group)
        if parsed is None:
            continue
        course, role = parsed
        view = views.setdefault(course, CourseView(course, spec=by_name.get(course)))
        view.members[role] = sorted(group.get("users", []))
        if role == "student" or not view.properties:
            view.properties = dict(group.get("properties") or {})
    for view in views.values():
        view.members = {role: view.members.get(role, []) for role in COURSE_ROLES}
    return dict(sorted(views.items()))


async def course_members(store: CourseStore, course: str) -> dict[str, set[str]]:
    """Role → members of `course`; CourseNotOnHub when one of its groups is missing."""
    members: dict[str, set[str]] = {}
    for role, group in course_groups(course).items():
        model = await store.group(group)
        if model is None:
            raise CourseNotOnHub(f"course {course!r} has no group {group!r} on the hub")
        members[role] = set(model.get("users", []))
    return members


async def set_role(store: CourseStore, course: str, user: str, role: str | None) -> dict[str, set[str]]:
    """Make `user` a member of `course` with exactly `role` (None: no longer a member at all), creating the user
    when adding someone new. The course must exist (CourseNotOnHub). Returns the members before the change."""
    if role is not None and role not in COURSE_ROLES:
        raise ValueError(f"invalid course role {role!r}: one of {', '.join(COURSE_ROLES)}")
    if not user:
        raise ValueError("empty user name")
    before = await course_members(store, course)
    if role is not None:
        await store.ensure_users([user])
    for each in COURSE_ROLES:
        if each == role and user not in before[each]:
            await store.add_members(group_name(course, each), [user])
        elif each != role and user in before[each]:
            await store.remove_members(group_name(course, each), [user])
    return before


async def find_course(store: CourseStore, **properties: Any) -> str | None:
    """The course whose students' group's properties hold all of `properties` (e.g. `lti_context="..."`), or None.
    With several matches, the first by name."""
    if not properties:
        raise ValueError("find_course needs at least one property to match")
    for group in sorted(await store.groups(), key=lambda g: g["name"]):
        parsed = parse_group(group["name"])
        if parsed is None or parsed[1] != "student":
            continue
        found = group.get("properties") or {}
        if all(key in found and found[key] == value for key, value in properties.items()):
            return parsed[0]
    return None
