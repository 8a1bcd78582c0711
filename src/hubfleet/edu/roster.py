"""Roster sync: a course's members in the LMS (LTI NRPS) → the course's groups on the hub.

Each member with a course role (`hubfleet.edu.lti.roles.course_role`: Instructor or Administrator → instructor,
TeachingAssistant → ta, Learner → student; ContentDeveloper or Mentor alone are ignored) becomes a hub user in the
group of that role, moved when the role changed. Students no longer in the roster, or no longer Active there, leave
the course's groups; their hub users and files stay. Staff missing from the roster (or inactive there) are left
alone: the fleet file or an operator may have put them there.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.common.settings import HubSettings
from hubfleet.edu.course_store import CourseNotOnHub, CourseStore, course_members, load_courses
from hubfleet.edu.exchange.lms import course_link
from hubfleet.edu.exchange.tables import RosterSync, utcnow
from hubfleet.edu.lti.identity import IdentityStore
from hubfleet.edu.lti.identity import Usernames as UsernameRule
from hubfleet.edu.lti.keys import TOOL_KEY_FILE, ToolKey
from hubfleet.edu.lti.roles import course_role
from hubfleet.edu.lti.services import Member, ServiceClient, ServiceError
from hubfleet.spec.edu import COURSE_ROLES, course_groups

log = logging.getLogger(__name__)

__all__ = [
    "CourseNotOnHub",
    "RosterError",
    "SyncReport",
    "Usernames",
    "last_sync",
    "sync_course",
    "sync_from_lms",
]

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


class RosterError(Exception):
    """A roster sync that cannot run or failed; the message says why and what to do (no secret in it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def last_sync(sessions: sessionmaker[Session], hub: str, course: str) -> RosterSync | None:
    """The course's last roster sync from its LMS (by `sync_from_lms`), if any."""
    with sessions() as session:
        return session.get(RosterSync, (hub, course))


def _record(
    sessions: sessionmaker[Session], hub: str, course: str, by: str, report: SyncReport | None, error: str | None
) -> None:
    with sessions.begin() as session:
        row = session.get(RosterSync, (hub, course)) or RosterSync(hub=hub, course=course)
        row.synced_at, row.by, row.ok = utcnow(), by, error is None
        row.report = report.to_dict() if report is not None else {}
        row.error = error
        session.add(row)


async def sync_from_lms(
    store: CourseStore,
    settings: HubSettings,
    course: str,
    *,
    sessions: sessionmaker[Session],
    by: str,
    memberships_url: str | None = None,
) -> SyncReport:
    """Sync `course` from its LMS roster now (what `hubfleet course sync` and the course's roster page do): the
    roster URL the course's LTI launches recorded (or `memberships_url`), the hub's LMS registration of the
    course's issuer and its tool key; the outcome is recorded (`last_sync`). RosterError says what is missing or
    what the LMS answered."""
    view = (await load_courses(store, settings.courses)).get(course)
    if view is None:
        raise RosterError(f"no course {course!r} on hub {settings.hub!r}")
    if settings.lti is None:
        raise RosterError(f"hub {settings.hub!r} has no LTI registrations (`lti:` in the fleet file)")
    if view.roster != "lms":
        raise RosterError(f"course {course!r} takes its members from the fleet file (roster: fleet-file), not the LMS")
    link = await asyncio.to_thread(course_link, sessions, settings.hub, course)
    url = memberships_url or (link.memberships_url if link else None) or view.properties.get("lti_memberships_url")
    if not url:
        raise RosterError(
            f"no roster URL known for course {course!r}: launch it from the LMS once as its instructor "
            "(or give the LMS's NRPS URL: `hubfleet course sync … --memberships-url URL`)"
        )
    issuer = view.properties.get("lti_issuer") or (link.issuer if link else None)
    platforms = [p for p in settings.lti.platforms if issuer is None or p.issuer == issuer]
    if len(platforms) != 1:
        which = f"issuer {issuer!r}" if issuer else "the course (no launch recorded its LMS)"
        raise RosterError(f"cannot tell which LMS registration of hub {settings.hub!r} serves {which}")
    platform = platforms[0]
    key_file = settings.state_dir / TOOL_KEY_FILE
    if not key_file.is_file():
        raise RosterError(f"hub {settings.hub!r} has no LTI tool key yet: it is made when the hub first starts")
    rule = UsernameRule(IdentityStore(sessions), settings.lti.username, frozenset(settings.named_users()))
    report: SyncReport | None = None
    error: str | None = None
    async with httpx.AsyncClient(timeout=30) as http:
        client = ServiceClient(platform, ToolKey.load_or_create(key_file), http=http)
        try:
            report = await sync_course(
                store, client, course=course, context_memberships_url=url, usernames=rule.of_members(platform.issuer)
            )
        except ServiceError as exc:
            error = f"the LMS at {platform.issuer} refused the roster sync: {exc.message}"
        except httpx.HTTPError as exc:
            error = f"the hub did not take the roster's changes ({type(exc).__name__}): try again"
    await asyncio.to_thread(_record, sessions, settings.hub, course, by, report, error)
    if error is not None:
        raise RosterError(error)
    assert report is not None
    return report
