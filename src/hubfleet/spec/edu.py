"""Education parts of a hub's spec: courses and LTI 1.3 platform registrations, and the names a course gives its
JupyterHub groups and folder (the checks of the fleet file need them; `hubfleet.edu.courses` derives the rest)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

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


GIT_URL_SCHEMES = ("https", "http", "git")
"""How a course's or a link's git content may be reached: public repositories (no credentials on the hub)."""

MAX_GIT_URL = 2048
MAX_CONTENT_PATH = 512

_GIT_REF_RE = re.compile(r"[A-Za-z0-9._/-]{1,200}")


def check_git_url(url: str) -> str:
    """`url` if it is the URL of a git repository hubfleet may pull (https, http or git://, a host, no credentials,
    no spaces); ValueError saying why not."""
    if not url or len(url) > MAX_GIT_URL or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError(f"a git repository URL of at most {MAX_GIT_URL} characters, without spaces")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ValueError(f"{url!r} is not a URL") from None
    if parts.scheme not in GIT_URL_SCHEMES or not host:
        raise ValueError(f"{url!r} is not a git repository URL: use {', '.join(s + '://' for s in GIT_URL_SCHEMES)}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the repository URL must not hold credentials: only public repositories can be pulled")
    return url


def check_git_branch(branch: str) -> str:
    """`branch` if it is a plausible git branch or tag name (no leading '-', no '..', no spaces)."""
    if (
        not _GIT_REF_RE.fullmatch(branch)
        or branch.startswith(("-", "/", "."))
        or branch.endswith(("/", ".", ".lock"))
        or ".." in branch
        or "//" in branch
    ):
        raise ValueError(f"{branch!r} is not a git branch name")
    return branch


def check_relative_path(path: str, what: str = "path") -> str:
    """`path` if it is a relative path that stays inside its folder (no '..', not absolute, no control characters);
    returned normalised (no '.' parts, no trailing '/')."""
    if not path or len(path) > MAX_CONTENT_PATH or any(ord(ch) < 32 for ch in path) or "\\" in path:
        raise ValueError(f"the {what} must be a relative path of at most {MAX_CONTENT_PATH} characters")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"the {what} {path!r} must stay inside its folder (relative, no '..')")
    normal = "/".join(part for part in pure.parts if part != ".")
    if not normal:
        raise ValueError(f"the {what} {path!r} names no file or folder")
    return normal


class CourseContent(SpecModel):
    """A course's material in a public git repository: pulled (nbgitpuller) into each student's home, as
    `~/<course>/material`, every time they launch the course from the LMS; their own edits are kept."""

    repo: str = Field(description="the repository's URL (https://, http:// or git://; public: no credentials)")
    branch: str | None = Field(None, description="the branch to pull (default: the repository's default branch)")
    path: str | None = Field(
        None, description="what to open after the pull: a notebook or folder in the repository (default: its top)"
    )

    @field_validator("repo")
    @classmethod
    def _repo(cls, repo: str) -> str:
        return check_git_url(repo)

    @field_validator("branch")
    @classmethod
    def _branch(cls, branch: str | None) -> str | None:
        return None if branch is None else check_git_branch(branch)

    @field_validator("path")
    @classmethod
    def _path(cls, path: str | None) -> str | None:
        return None if path is None else check_relative_path(path)


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
    content: CourseContent | None = Field(
        None, description="the course's material from git, pulled into each student's home when they launch it"
    )

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
