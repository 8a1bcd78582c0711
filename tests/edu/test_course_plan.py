"""`hubfleet plan` for courses: members change live, in the course's groups; other course settings restart."""

from __future__ import annotations

from hubfleet.fleet.plan import diff_hub
from hubfleet.spec.auth import SharedPasswordAuth
from hubfleet.spec.edu import Course
from hubfleet.spec.models import Hub

AUTH = SharedPasswordAuth(type="shared-password", password="a-long-password")


def hub(*courses: Course) -> Hub:
    return Hub(name="uni", auth=AUTH, courses=list(courses))


def test_members_change_live_in_the_courses_groups() -> None:
    before = hub(Course(name="ca", instructors=["i"], students=["s1", "s2"]))
    after = hub(Course(name="ca", instructors=["i"], tas=["t"], students=["s1", "s3"]))
    change = diff_hub(before, after)
    assert not change.needs_restart
    assert change.members_added == {"ca-tas": ["t"], "ca-students": ["s3"]}
    assert change.members_removed == {"ca-students": ["s2"]}
    assert change.users_added == ["s3", "t"] and change.users_removed == ["s2"]
    assert "group ca-students: + s3" in change.lines()


def test_unchanged_courses_change_nothing() -> None:
    course = Course(name="ca", students=["s1"])
    assert diff_hub(hub(course), hub(course)).kind == "unchanged"


def test_new_courses_and_course_settings_restart_the_hub() -> None:
    before = hub(Course(name="ca", students=["s1"]))
    added = diff_hub(before, hub(Course(name="ca", students=["s1"]), Course(name="cb", students=["s2"])))
    assert added.settings_changed == ["courses"]
    assert added.groups_added == ["cb-instructors", "cb-students", "cb-tas"]
    retitled = diff_hub(before, hub(Course(name="ca", title="New", students=["s1"])))
    assert retitled.settings_changed == ["courses"] and not retitled.live
    removed = diff_hub(before, hub())
    assert removed.groups_removed == ["ca-instructors", "ca-students", "ca-tas"]
