"""Education parts of a hub's spec: courses and LTI 1.3 platform registrations, and the names a course gives its
JupyterHub groups and folder (the checks of the fleet file need them; `hubfleet.edu.courses` derives the rest)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import AnyHttpUrl, Field, ValidationInfo, field_validator, model_validator

from hubfleet.spec.base import Slug, SpecModel, Username
from hubfleet.spec.units import Seconds

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Meeting(SpecModel):
    """A weekly class meeting (servers of the course's students are pre-warmed before it, see `prewarm`)."""

    day: Weekday = Field(description="day of the week (mon … sun)")
    start: dt.time = Field(description="start time, local time of the fleet's machine (HH:MM)")
    end: dt.time = Field(description="end time (HH:MM)")

    @field_validator("end")
    @classmethod
    def _ordered(cls, end: dt.time, info: ValidationInfo) -> dt.time:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError("a meeting must end after it starts")
        return end


class PreWarm(SpecModel):
    """Starting the course's students' servers before each meeting of its `schedule`, so that the class starts at
    once: the students likely to come (those active on recent days), as many as the machine's free memory allows."""

    enabled: bool = Field(True, description="pre-warm before each meeting (needs a `schedule`)")
    lead: Seconds = Field(600, description="how long before a meeting's start the servers are started")
    keep_unused: Seconds = Field(
        900, description="how long after a meeting's start a pre-warmed server nobody came to is kept, then stopped"
    )
    max_servers: int | None = Field(
        None, ge=1, description="at most this many servers (default: as many as free memory allows)"
    )

    @field_validator("lead")
    @classmethod
    def _lead(cls, value: int) -> int:
        if not 60 <= value <= 4 * 3600:
            raise ValueError("must be between 1m and 4h")
        return value


class Course(SpecModel):
    """A course taught on the hub: its people become JupyterHub groups and roles, its folder a shared folder."""

    name: Slug = Field(description="short name, used in group names (`<name>-students`, …) and folder names")
    title: str | None = Field(None, description="the course's full title")
    instructors: list[Username] = Field(default_factory=list, description="instructors (full control of the course)")
    tas: list[Username] = Field(default_factory=list, description="teaching assistants (manage students' servers)")
    students: list[Username] = Field(default_factory=list, description="students named in the fleet file")
    roster: Literal["fleet-file", "lms"] = Field(
        "fleet-file", description="where the student list comes from: this file, or the LMS roster (LTI NRPS sync)"
    )
    lms_context: str | None = Field(
        None, description="the LTI context (course) id this course is linked to in the LMS, if any"
    )
    profile: Slug | None = Field(None, description="the hub profile the course's students get (default: hub default)")
    folder: bool = Field(True, description="a shared course folder: read-only for students, read-write for staff")
    schedule: list[Meeting] = Field(
        default_factory=list, description="weekly meetings: the hub stays awake and pre-warms servers before them"
    )
    prewarm: PreWarm = Field(default_factory=PreWarm, description="servers started before each meeting")

    @property
    def staff(self) -> set[str]:
        """Instructors and TAs."""
        return set(self.instructors) | set(self.tas)

    @property
    def members(self) -> set[str]:
        """Everyone the fleet file names for this course."""
        return self.staff | set(self.students)


LTIPlatformKind = Literal["canvas", "moodle", "openedx", "other"]


class LTIPlatform(SpecModel):
    """One LMS registration of the hub as an LTI 1.3 tool, keyed by (issuer, client_id)."""

    label: LTIPlatformKind = Field("other", description="what kind of LMS this is (canvas, moodle, openedx, other)")
    issuer: str = Field(min_length=1, description="the platform's `iss` (e.g. https://canvas.instructure.com)")
    client_id: str = Field(min_length=1, description="the client id the LMS gave the tool (Canvas: developer key id)")
    deployment_ids: list[str] = Field(min_length=1, description="deployment ids of the tool in this LMS")
    auth_login_url: AnyHttpUrl = Field(description="the platform's OIDC authorization endpoint")
    token_url: AnyHttpUrl = Field(description="the platform's OAuth 2 token endpoint (for roster sync and grades)")
    jwks_url: AnyHttpUrl = Field(description="the platform's public key set (JWKS)")


class LTI(SpecModel):
    """LTI 1.3: users launch the hub from their LMS, logged in, in the right course, with the right role."""

    platforms: list[LTIPlatform] = Field(min_length=1, description="LMS registrations")
    username: Literal["email", "name", "sub"] = Field(
        "email",
        description="how a hub user name is derived: the e-mail's local part, the person's name, or the LMS's opaque"
        " `sub` (each normalised; a clash with another person gets a numbered suffix, never a merge)",
    )
    auto_create_courses: bool = Field(True, description="an instructor's first launch from a new LMS course creates it")
    leeway: Seconds = Field(60, description="clock skew allowed on `iat`/`exp`")
    login_ttl: Seconds = Field(600, description="how long a started login (state and nonce) stays valid")
    max_pending_logins: int = Field(10_000, ge=10, description="bound on logins started but not finished")
    initiations_per_address: int = Field(
        60,
        ge=1,
        description="login initiations one client address may start per minute (a burst of as many at once; a "
        "computer lab behind one address counts once); beyond it: 429",
    )
    initiations_per_platform: int = Field(
        1200, ge=1, description="login initiations per minute for one LMS registration, all addresses together"
    )

    @model_validator(mode="after")
    def _unique_registrations(self) -> LTI:
        seen: set[tuple[str, str]] = set()
        for platform in self.platforms:
            key = (platform.issuer, platform.client_id)
            if key in seen:
                raise ValueError(f"two registrations of issuer {key[0]!r} with client_id {key[1]!r}")
            seen.add(key)
        return self


COURSE_ROLES = ("instructor", "ta", "student")
"""A member's role in a course, most privileged first."""

GROUP_SUFFIXES = {"instructor": "instructors", "ta": "tas", "student": "students"}
"""Role → suffix of the course's group for it."""

COURSES_FOLDER = "courses"
"""Folder, beside a hub's shared folders, that holds its course folders; also the folder of links in each home."""

COURSE_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9_-]{0,30}[a-z0-9])?")
"""A course name (the spec's `Slug`)."""

_SUFFIX_ROLES = {suffix: role for role, suffix in GROUP_SUFFIXES.items()}


def check_course(course: str) -> None:
    """Refuse `course` unless it is a valid course name."""
    if not COURSE_NAME_RE.fullmatch(course):
        raise ValueError(f"invalid course name {course!r}: lower-case letters, digits, '-' and '_', at most 32")


def check_role(role: str) -> None:
    """Refuse `role` unless it is a course role."""
    if role not in GROUP_SUFFIXES:
        raise ValueError(f"invalid course role {role!r}: one of {', '.join(COURSE_ROLES)}")


def group_name(course: str, role: str) -> str:
    """The JupyterHub group of `course`'s members with `role`: `<course>-instructors`, `-tas` or `-students`."""
    check_course(course)
    check_role(role)
    return f"{course}-{GROUP_SUFFIXES[role]}"


def course_groups(course: str) -> dict[str, str]:
    """Role → group name, for each of `course`'s three groups."""
    return {role: group_name(course, role) for role in COURSE_ROLES}


def parse_group(group: str) -> tuple[str, str] | None:
    """`(course, role)` when `group` is the name of a course's group (inverse of `group_name`), else None."""
    course, sep, suffix = group.rpartition("-")
    role = _SUFFIX_ROLES.get(suffix)
    if not sep or role is None or not COURSE_NAME_RE.fullmatch(course):
        return None
    return course, role
