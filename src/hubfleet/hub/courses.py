"""Courses inside a running hub, straight in JupyterHub's database: `OrmCourses`, the hub-side adapter of
`hubfleet.edu.course_store.CourseStore`.

For courses that appear at run time (an instructor's first LTI launch from a new LMS course) and for members the
LMS adds: the fleet file's courses come in through `load_groups`/`load_roles` (`hubfleet.hub.config`). `db` is the
JupyterHub app's SQLAlchemy session (`self.parent.db` in an authenticator, `handler.db` in a handler). Its methods
are coroutines (the protocol's shape) that never wait: a sequence of them without other awaits in between runs as
one step of the hub's event loop.

The staff role of a course created here is marked `managed_by_auth`: JupyterHub deletes roles that are neither in
`load_roles` nor managed by the authenticator at start-up, and a run-time course must survive a hub restart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jupyterhub import orm, roles
from sqlalchemy.orm import Session

from hubfleet.edu.course_store import set_role
from hubfleet.edu.courses import STAFF_ROLES, staff_role
from hubfleet.spec.edu import course_groups, group_name

__all__ = ["OrmCourses"]


class OrmCourses:
    """The hub's users and groups in JupyterHub's database (a `CourseStore`), and courses created there."""

    def __init__(self, db: Session) -> None:
        self.db = db

    @staticmethod
    def _model(group: orm.Group) -> dict:
        return {"name": group.name, "users": [user.name for user in group.users], "properties": group.properties}

    async def groups(self) -> list[dict]:
        return [self._model(group) for group in self.db.query(orm.Group).order_by(orm.Group.name)]

    async def group(self, name: str) -> dict | None:
        group = orm.Group.find(self.db, name)
        return None if group is None else self._model(group)

    async def ensure_users(self, names: Iterable[str]) -> None:
        """Create those of `names` who are new, with JupyterHub's default roles."""
        for name in names:
            if orm.User.find(self.db, name) is None:
                user = orm.User(name=name)
                self.db.add(user)
                roles.assign_default_roles(self.db, entity=user)
        self.db.commit()

    async def add_members(self, group: str, users: Iterable[str]) -> None:
        self._change(group, users, add=True)

    async def remove_members(self, group: str, users: Iterable[str]) -> None:
        self._change(group, users, add=False)

    def _change(self, name: str, users: Iterable[str], *, add: bool) -> None:
        group = orm.Group.find(self.db, name)
        if group is None:
            return
        for username in users:
            user = orm.User.find(self.db, username)
            if user is None:
                continue
            if add and group not in user.groups:
                user.groups.append(group)
            elif not add and group in user.groups:
                user.groups.remove(group)
        self.db.commit()

    async def ensure_course(self, course: str, *, title: str | None = None, properties: dict | None = None) -> None:
        """Create `course`'s three groups and its staff role if missing (idempotent).

        Each group's `properties` get `course` and `role`, plus `title` and `properties` (e.g. `lti_context`) when
        given; other keys already there are kept. The staff role is granted to the instructors' and TAs' groups.
        """
        db = self.db
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

    async def set_member(self, course: str, username: str, role: str | None) -> None:
        """Make `username` a member of `course` with exactly `role` (None: no longer a member at all), creating
        the course when someone joins one that is missing."""
        if role is not None and orm.Group.find(self.db, group_name(course, "student")) is None:
            await self.ensure_course(course)
        if role is None and orm.Group.find(self.db, group_name(course, "student")) is None:
            return
        await set_role(self, course, username, role)
