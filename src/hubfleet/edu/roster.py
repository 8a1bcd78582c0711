"""Roster sync: a course's members in the LMS (LTI NRPS) → the course's groups on the hub.

Each member with a course role (`hubfleet.edu.lti.roles.course_role`: Instructor or Administrator → instructor,
TeachingAssistant → ta, Learner → student; ContentDeveloper or Mentor alone are ignored) becomes a hub user in the
group of that role, moved when the role changed. Students no longer in the roster, or no longer Active there, leave
the course's groups; their hub users and files stay. Staff missing from the roster (or inactive there) are left
alone: the fleet file or an operator may have put them there.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from hubfleet.edu.lti.roles import course_role
from hubfleet.edu.lti.services import Member, ServiceClient
from hubfleet.spec.edu import COURSE_ROLES, course_groups

log = logging.getLogger(__name__)


class HubGroups(Protocol):
    """What a roster sync needs of the hub: its users and groups (`hubfleet.common.hubapi.HubAPI` has it over the
    REST API; an adapter over JupyterHub's database would do inside the hub)."""

    async def group(self, name: str) -> dict | None: ...

    async def ensure_users(self, names: Iterable[str]) -> None: ...

    async def add_members(self, group: str, users: Iterable[str]) -> None: ...

    async def remove_members(self, group: str, users: Iterable[str]) -> None: ...


Usernames = Callable[[Member], str | Awaitable[str]]
"""How an LMS member gets their hub user name (e.g. `hubfleet.edu.lti.identity.IdentityStore.username_for`)."""


class CourseNotOnHub(LookupError):
    """The course's groups are not on the hub (define it in the fleet file, or launch it from the LMS first)."""


@dataclass
class SyncReport:
    """What a roster sync changed: hub user name → role (or (old role, new role))."""

    added: dict[str, str] = field(default_factory=dict)
    updated: dict[str, tuple[str, str]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    members: int = 0
    ignored: int = 0
    """Members without a course role (e.g. ContentDeveloper, Mentor)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": {user: list(change) for user, change in self.updated.items()},
            "removed": self.removed,
            "members": self.members,
            "ignored": self.ignored,
        }


async def _username(usernames: Usernames, member: Member) -> str:
    name = usernames(member)
    return await name if inspect.isawaitable(name) else name


async def sync_course(
    hub_api: HubGroups,
    client: ServiceClient,
    *,
    course: str,
    context_memberships_url: str,
    usernames: Usernames,
) -> SyncReport:
    """Bring `course`'s groups on the hub in line with the LMS roster at `context_memberships_url`."""
    groups = course_groups(course)
    current: dict[str, set[str]] = {}
    for role, group in groups.items():
        model = await hub_api.group(group)
        if model is None:
            raise CourseNotOnHub(f"course {course!r} has no group {group!r} on the hub")
        current[role] = set(model.get("users", []))
    had = {user: role for role in reversed(COURSE_ROLES) for user in current[role]}  # most privileged wins

    members = await client.members(context_memberships_url)
    report = SyncReport(members=len(members))
    wanted: dict[str, str] = {}  # hub user → course role, for the active members with one
    for member in members:
        role = course_role(member.roles)
        if role is None:
            report.ignored += 1
            continue
        if not member.active:
            continue
        user = await _username(usernames, member)
        previous = wanted.get(user)
        if previous is None or COURSE_ROLES.index(role) < COURSE_ROLES.index(previous):
            wanted[user] = role

    await hub_api.ensure_users(set(wanted) - set(had))  # users already on the hub are left as they are
    removals: dict[str, set[str]] = {role: set() for role in COURSE_ROLES}
    additions: dict[str, set[str]] = {role: set() for role in COURSE_ROLES}
    for user, role in wanted.items():
        dropped = [other for other in COURSE_ROLES if other != role and user in current[other]]
        for other in dropped:
            removals[other].add(user)
        if user not in current[role]:
            additions[role].add(user)
        if user not in had:
            report.added[user] = role
        elif had[user] != role:
            report.updated[user] = (had[user], role)
    for user in current["student"] - wanted.keys():  # students who left the roster or are no longer active
        removals["student"].add(user)
        report.removed.append(user)
    for role in COURSE_ROLES:
        await hub_api.remove_members(groups[role], removals[role])
        await hub_api.add_members(groups[role], additions[role])
    report.removed.sort()
    log.info(
        "roster of course %s: %d members, %d added, %d updated, %d removed, %d ignored",
        course,
        report.members,
        len(report.added),
        len(report.updated),
        len(report.removed),
        report.ignored,
    )
    return report
