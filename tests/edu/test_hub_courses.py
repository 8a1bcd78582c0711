"""Courses inside a hub (`hubfleet.hub.courses`) against a real JupyterHub database in memory, with JupyterHub's
own role and scope resolution deciding who may do what."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from jupyterhub import orm, roles, scopes
from sqlalchemy.orm import Session

from hubfleet.edu import course_store
from hubfleet.hub.courses import OrmCourses


def ensure_course(db: Session, course: str, **kwargs: Any) -> None:
    asyncio.run(OrmCourses(db).ensure_course(course, **kwargs))


def set_member(db: Session, course: str, user: str, role: str | None) -> None:
    asyncio.run(OrmCourses(db).set_member(course, user, role))


def find_course(db: Session, **properties: Any) -> str | None:
    return asyncio.run(course_store.find_course(OrmCourses(db), **properties))


@pytest.fixture
def db() -> Iterator[Session]:
    session = orm.new_session_factory("sqlite:///:memory:")()
    for role in roles.get_default_roles():
        roles.create_role(session, role)
    yield session
    session.close()


def groups_of(db: Session, user: str) -> list[str]:
    return sorted(group.name for group in orm.User.find(db, user).groups)


def may(db: Session, user: str, scope: str) -> bool:
    """Whether `user` holds `scope` (a filtered scope, e.g. `servers!user=x`), as JupyterHub's handlers decide."""
    owner = orm.User.find(db, user)
    return bool(scopes.has_scope(scope, scopes.get_scopes_for(owner), db=db))


def test_ensure_course_is_idempotent_and_keeps_properties(db: Session) -> None:
    ensure_course(db, "phys", title="Physics", properties={"lti_context": "ctx-1"})
    ensure_course(db, "phys", properties={"roster": "lms"})
    groups = {g.name: g for g in db.query(orm.Group)}
    assert sorted(groups) == ["phys-instructors", "phys-students", "phys-tas"]
    assert groups["phys-students"].properties == {
        "course": "phys",
        "role": "student",
        "title": "Physics",
        "lti_context": "ctx-1",
        "roster": "lms",
    }
    role = orm.Role.find(db, "course-phys-staff")
    assert sorted(g.name for g in role.groups) == ["phys-instructors", "phys-tas"]
    assert role.managed_by_auth  # survives a hub restart (not in load_roles)
    assert db.query(orm.Role).filter_by(name="course-phys-staff").count() == 1


def test_set_member_gives_exactly_one_role(db: Session) -> None:
    set_member(db, "phys", "ann", "student")  # creates the user and the course
    assert groups_of(db, "ann") == ["phys-students"]
    assert [r.name for r in orm.User.find(db, "ann").roles] == ["user"]
    set_member(db, "phys", "ann", "ta")
    set_member(db, "phys", "ann", "ta")
    assert groups_of(db, "ann") == ["phys-tas"]
    set_member(db, "chem", "ann", "student")
    set_member(db, "phys", "ann", None)
    assert groups_of(db, "ann") == ["chem-students"]
    set_member(db, "phys", "nobody", None)
    assert orm.User.find(db, "nobody") is None
    with pytest.raises(ValueError, match="invalid course role"):
        set_member(db, "phys", "ann", "dean")
    with pytest.raises(ValueError, match="invalid course name"):
        set_member(db, "Bad Name", "ann", "ta")


def test_find_course_by_properties(db: Session) -> None:
    ensure_course(db, "a", properties={"lti_context": "c-1", "issuer": "https://lms"})
    ensure_course(db, "b", properties={"lti_context": "c-2", "issuer": "https://lms"})
    assert find_course(db, lti_context="c-2") == "b"
    assert find_course(db, lti_context="c-1", issuer="https://lms") == "a"
    assert find_course(db, lti_context="c-3") is None
    with pytest.raises(ValueError):
        find_course(db)


def test_staff_reach_their_courses_students_and_nobody_else(db: Session) -> None:
    for course, user, role in [
        ("a", "ia", "instructor"),
        ("a", "ta", "ta"),
        ("a", "sa", "student"),
        ("b", "sb", "student"),
        ("b", "ib", "instructor"),
    ]:
        set_member(db, course, user, role)
    for staff in ("ia", "ta"):
        for scope in ("read:users", "start:servers", "delete:servers", "access:servers", "list:users"):
            assert may(db, staff, f"{scope}!user=sa")
            assert not may(db, staff, f"{scope}!user=sb")
        assert may(db, staff, "access:servers!server=sa/")
        assert not may(db, staff, "access:servers!server=ib/")
        assert may(db, staff, "read:groups!group=a-students")
        assert not may(db, staff, "read:groups!group=b-students")
    assert not may(db, "sa", "access:servers!server=sb/")
    assert not may(db, "sa", "read:users!user=ta")
    # Membership changes take effect at once.
    set_member(db, "a", "sb", "student")
    assert may(db, "ta", "access:servers!user=sb")
    set_member(db, "a", "sb", None)
    assert not may(db, "ta", "access:servers!user=sb")
