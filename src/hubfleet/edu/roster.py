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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hubfleet.edu.course_store import CourseNotOnHub, CourseStore, course_members
from hubfleet.edu.lti.roles import course_role
from hubfleet.edu.lti.services import Member, ServiceClient
from hubfleet.spec.edu import COURSE_ROLES, course_groups

log = logging.getLogger(__name__)

__all__ = ["CourseNotOnHub", "SyncReport", "Usernames", "sync_course"]

Usernames = Callable[[Member], str | Awaitable[str]]
"""How an LMS member gets their hub user name (`hubfleet.edu.lti.identity.Usernames.of_members`)."""


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
    hub: CourseStore,
    client: ServiceClient,
    *,
    course: str,
    context_memberships_url: str,
    usernames: Usernames,
) -> SyncReport:
    """Bring `course`'s groups on the hub in line with the LMS roster at `context_memberships_url`."""
    groups = course_groups(course)
    current = await course_members(hub, course)
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

    await hub.ensure_users(set(wanted) - set(had))  # users already on the hub are left as they are
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
        await hub.remove_members(groups[role], removals[role])
        await hub.add_members(groups[role], additions[role])
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
