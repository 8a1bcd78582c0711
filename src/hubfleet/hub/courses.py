"""Courses inside a running hub: their groups, staff role and members, straight in JupyterHub's database.

For courses that appear at run time (an instructor's first LTI launch from a new LMS course) and for members the
LMS or the CLI add: the fleet file's courses come in through `load_groups`/`load_roles` (`hubfleet.hub.config`).
`db` is the JupyterHub app's SQLAlchemy session (`self.parent.db` in an authenticator, `handler.db` in a handler).
Names come from `hubfleet.edu.courses`.

The staff role of a course created here is marked `managed_by_auth`: JupyterHub deletes roles that are neither in
`load_roles` nor managed by the authenticator at start-up, and a run-time course must survive a hub restart.
"""

from __future__ import annotations

from typing import Any

from jupyterhub import orm, roles
from sqlalchemy.orm import Session

from hubfleet.edu.courses import STAFF_ROLES, staff_role
from hubfleet.spec.edu import COURSE_ROLES, course_groups, group_name, parse_group

__all__ = ["ensure_course", "find_course", "set_member"]


def ensure_course(db: Session, course: str, *, title: str | None = None, properties: dict | None = None) -> None:
    """Create `course`'s three groups and its staff role if missing (idempotent).

    Each group's `properties` get `course` and `role`, plus `title` and `properties` (e.g. `lti_context`) when
    given; other keys already there are kept. The staff role is granted to the instructors' and TAs' groups.
    """
    extra: dict[str, Any] = dict(properties or {})
    if title is not None:
        extra["title"] = title
    groups = {}
    for role, name in course_groups(course).items():
        group = orm.Group.find(db, name)
        if group is None:
            group = orm.Group(name=name, properties={})
            db.add(group)
        wanted = {**(group.properties or {}), **extra, "course": course, "role": role}
        if group.properties != wanted:
            group.properties = wanted  # a new dict: JupyterHub's JSONDict does not track changes inside one
        groups[role] = group
    definition = staff_role(course)
    role_row = orm.Role.find(db, definition["name"])
    if role_row is None:
        spec = {k: v for k, v in definition.items() if k != "groups"}
        role_row = roles.create_role(db, {**spec, "managed_by_auth": True}, commit=False)
    for role in STAFF_ROLES:
        roles.grant_role(db, groups[role], role_row, commit=False)
    db.commit()


def set_member(db: Session, course: str, username: str, role: str | None) -> None:
    """Make `username` a member of `course` with exactly `role` (None: no longer a member at all).

    Creates the user (with JupyterHub's default roles) when adding someone new, and the course when missing.
    Removing a user who is not a member changes nothing.
    """
    if role is not None and role not in COURSE_ROLES:
        raise ValueError(f"invalid course role {role!r}: one of {', '.join(COURSE_ROLES)}")
    if not username:
        raise ValueError("empty user name")
    user = orm.User.find(db, username)
    if user is None:
        if role is None:
            return
        user = orm.User(name=username)
        db.add(user)
        roles.assign_default_roles(db, entity=user)
    if role is not None and orm.Group.find(db, group_name(course, role)) is None:
        ensure_course(db, course)
    for each, name in course_groups(course).items():
        group = orm.Group.find(db, name)
        if group is None:
            continue
        if each == role and group not in user.groups:
            user.groups.append(group)
        elif each != role and group in user.groups:
            user.groups.remove(group)
    db.commit()


def find_course(db: Session, **properties: Any) -> str | None:
    """The course whose groups' properties hold all of `properties` (e.g. `lti_context="..."`), or None.

    With several matches, the first by name.
    """
    if not properties:
        raise ValueError("find_course needs at least one property to match")
    for group in db.query(orm.Group).order_by(orm.Group.name):
        parsed = parse_group(group.name)
        if parsed is None or parsed[1] != "student":
            continue
        found = group.properties or {}
        if all(key in found and found[key] == value for key, value in properties.items()):
            return parsed[0]
    return None
