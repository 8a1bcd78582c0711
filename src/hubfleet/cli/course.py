"""Course commands: list, show, add-member, remove-member — on the running fleet, through each hub's REST API.

Courses are the hub's groups (`hubfleet.edu.courses`): the fleet file's courses and those created at run time
(an instructor's first LTI launch) alike. The commands act as the fleet's service, with its token from the state
directory, so they need the rights of the fleet's operator (root on a one-machine install).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import typer
from pydantic import TypeAdapter, ValidationError
from rich.markup import escape

from hubfleet.cli.output import STATE_DIR_OPTION, console, errors, fail, hub_settings
from hubfleet.cli.tables import Column, print_table
from hubfleet.common.hubapi import HubAPI
from hubfleet.common.settings import HubSettings
from hubfleet.common.state import FleetState
from hubfleet.db import open_database
from hubfleet.edu.course_store import FLEET_FILE_SOURCE, CourseView, load_courses, set_role
from hubfleet.edu.roster import RosterError, SyncReport, last_sync, sync_from_lms
from hubfleet.fleet.control import ControlClient, NotRunning
from hubfleet.spec.base import Username
from hubfleet.spec.edu import COURSE_ROLES

course_app = typer.Typer(
    name="course",
    help="Courses on a hub: their staff and students, on the running fleet.",
    no_args_is_help=True,
)

HUB_ARGUMENT: Any = typer.Argument(..., help="the hub (see `hubfleet status`)")
COURSE_ARGUMENT: Any = typer.Argument(..., help="the course's short name (see `hubfleet course list HUB`)")
USER_ARGUMENT: Any = typer.Argument(..., help="the hub user name")
JSON_OPTION: Any = typer.Option(False, "--json", help="machine-readable output")

_T = TypeVar("_T")


def hub_api(settings: HubSettings) -> HubAPI:
    """The hub's REST API on loopback, as the fleet's service."""
    return HubAPI(settings.address.hub_api_url, settings.secret("service_token"))


def run_on_hub(settings: HubSettings, action: Callable[[HubAPI], Awaitable[_T]]) -> _T:
    """Run `action` against the hub's API; a hub that does not answer is a clear error."""

    async def go() -> _T:
        async with hub_api(settings) as api:
            return await action(api)

    try:
        ControlClient(FleetState(settings.state_dir.parents[1]), timeout=180).wake(settings.hub)  # if it sleeps
    except NotRunning:
        pass  # no supervisor: the call below says the hub does not answer
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    try:
        return asyncio.run(go())
    except httpx.TransportError as exc:
        raise fail(f"hub {settings.hub!r} does not answer ({exc}): is the fleet running? (`hubfleet status`)") from None


async def _courses(api: HubAPI, settings: HubSettings) -> dict[str, CourseView]:
    return await load_courses(api, settings.courses)


def _check_user(user: str) -> None:
    try:
        TypeAdapter(Username).validate_python(user)
    except ValidationError:
        raise fail(f"invalid user name {user!r}: no spaces, '/', ':' or ','") from None
    if user != user.lower():
        raise fail(f"JupyterHub lower-cases user names: write {user.lower()!r}")


def _find(views: dict[str, CourseView], hub: str, course: str) -> CourseView:
    if course not in views:
        raise fail(f"no course {course!r} on hub {hub!r} (courses: {', '.join(views) or 'none'})")
    return views[course]


@course_app.command("list")
def list_courses(
    hub: str = HUB_ARGUMENT, state_dir: Path | None = STATE_DIR_OPTION, as_json: bool = JSON_OPTION
) -> None:
    """List the hub's courses: the fleet file's and those created at run time (e.g. from the LMS)."""
    settings = hub_settings(state_dir, hub)
    views = run_on_hub(settings, lambda api: _courses(api, settings))
    if as_json:
        print(json.dumps([view.to_dict() for view in views.values()], indent=2))
        return
    columns = [Column("course"), Column("title"), Column("origin")]
    columns += [Column(heading, right=True) for heading in ("instructors", "tas", "students")]
    columns.append(Column("lms context"))
    rows = []
    for view in views.values():
        data = view.to_dict()
        counts = [str(len(view.members[role])) for role in COURSE_ROLES]
        rows.append(
            [view.name, escape(data["title"] or ""), data["origin"], *counts, escape(data["lms_context"] or "")]
        )
    print_table(console, f"courses on hub {hub}", columns, rows, drop=[2], note="--json has all")


@course_app.command("show")
def show(
    hub: str = HUB_ARGUMENT,
    course: str = COURSE_ARGUMENT,
    state_dir: Path | None = STATE_DIR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one course: title, staff, students (and where each came from), folder, schedule."""
    settings = hub_settings(state_dir, hub)
    view = _find(run_on_hub(settings, lambda api: _courses(api, settings)), hub, course)
    data = view.to_dict()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    console.print(f"[bold]{escape(course)}[/]" + (f" — {escape(data['title'])}" if data["title"] else ""))
    console.print(f"  defined in: {data['origin']}; students from: {data['roster']}")
    if data["lms_context"]:
        console.print(f"  LMS context: {escape(data['lms_context'])}")
    synced = last_sync(open_database(settings.database_url), hub, course) if view.roster == "lms" else None
    if synced is not None:
        outcome = "ok" if synced.ok else f"failed: {escape(synced.error or '')}"
        console.print(
            f"  last roster sync from the LMS: {synced.synced_at:%Y-%m-%d %H:%M} UTC by {synced.by}, {outcome}"
        )
    console.print(f"  profile: {escape(data['profile'] or 'the hub default')}")
    if data["folder"]:
        console.print(f"  folder: ~/courses/{escape(course)} (staff write, students read)")
    rows = [
        [role, escape(member["name"]), member["source"]]
        for role, members in data["members"].items()
        for member in members
    ]
    print_table(console, None, [Column("role"), Column("user"), Column("source")], rows, note=None)
    for meeting in data["schedule"]:
        console.print(f"  meets {meeting['day']} {meeting['start'][:5]} to {meeting['end'][:5]}")
    if data["next_prewarm"]:
        warm = data["next_prewarm"]
        console.print(f"  next pre-warm: {warm['at'].replace('T', ' ')} (meeting at {warm['meeting'][11:]})")


async def _set_role(api: HubAPI, settings: HubSettings, course: str, user: str, role: str | None) -> CourseView:
    """Make `user` a member of `course` with exactly `role` (None: not a member); the course must exist."""
    view = _find(await _courses(api, settings), settings.hub, course)
    await set_role(api, course, user, role)
    return view


ROLE_OPTION: Any = typer.Option(..., "--role", help="instructor, ta or student", case_sensitive=False)


@course_app.command("add-member")
def add_member(
    hub: str = HUB_ARGUMENT,
    course: str = COURSE_ARGUMENT,
    user: str = USER_ARGUMENT,
    role: str = ROLE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Add USER to COURSE as instructor, TA or student (their role in the course changes if they had one).

    Takes effect at once, without a restart; the user is created on the hub if new. `hubfleet apply` leaves
    them alone: it only removes members the fleet file named before and no longer does.
    """
    role = role.lower()
    if role not in COURSE_ROLES:
        raise fail(f"--role must be one of {', '.join(COURSE_ROLES)}, not {role!r}")
    _check_user(user)
    settings = hub_settings(state_dir, hub)
    run_on_hub(settings, lambda api: _set_role(api, settings, course, user, role))
    console.print(f"[green]✓[/] {escape(user)} is {role} of course {escape(course)} on hub {escape(hub)}")


@course_app.command("remove-member")
def remove_member(
    hub: str = HUB_ARGUMENT,
    course: str = COURSE_ARGUMENT,
    user: str = USER_ARGUMENT,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Remove USER from COURSE (every role); their files stay. Takes effect at once."""
    _check_user(user)
    settings = hub_settings(state_dir, hub)
    view = run_on_hub(settings, lambda api: _set_role(api, settings, course, user, None))
    if not any(user in members for members in view.members.values()):
        console.print(f"{escape(user)} was not a member of course {escape(course)}: nothing changed")
        return
    console.print(f"[green]✓[/] {escape(user)} is no longer a member of course {escape(course)} on hub {escape(hub)}")
    if view.source(user) == FLEET_FILE_SOURCE:
        errors.print(
            f"[yellow]note:[/] the fleet file names {escape(user)} in this course: a restart of the hub adds them "
            "back; remove them from the file too"
        )


def register(root: typer.Typer) -> None:
    """Add `hubfleet course …` to `root`."""
    root.add_typer(course_app)


MEMBERSHIPS_OPTION: Any = typer.Option(
    None,
    "--memberships-url",
    help="the LMS's NRPS context memberships URL (default: the one the course's LTI launches recorded)",
)


@course_app.command("sync")
def sync(
    hub: str = HUB_ARGUMENT,
    course: str = COURSE_ARGUMENT,
    memberships_url: str | None = MEMBERSHIPS_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Sync COURSE's members from its LMS roster (LTI NRPS): people are added in the group of their LMS role or
    moved to it; students who left the course (or are inactive there) lose the course; their users and files stay.
    """
    settings = hub_settings(state_dir, hub)
    if settings.lti is None:
        raise fail(f"hub {hub!r} has no LTI registrations (`lti:` in the fleet file)")
    sessions = open_database(settings.database_url)

    async def sync_now(api: HubAPI) -> SyncReport:
        try:
            return await sync_from_lms(
                api, settings, course, sessions=sessions, by="operator", memberships_url=memberships_url
            )
        except RosterError as exc:
            raise fail(exc.message) from None

    report = run_on_hub(settings, sync_now)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    console.print(
        f"[green]✓[/] course {escape(course)}: {report.members} LMS members, {len(report.added)} added, "
        f"{len(report.updated)} changed role, {len(report.removed)} removed, {report.ignored} without a course role"
    )
    for user, role in sorted(report.added.items()):
        console.print(f"  + {escape(user)} ({role})")
    for user, (before, after) in sorted(report.updated.items()):
        console.print(f"  ~ {escape(user)} ({before} → {after})")
    for user in report.removed:
        console.print(f"  - {escape(user)}")
