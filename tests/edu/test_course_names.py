"""The pure derivations of a course: group names and their inverse, the staff role, folders (no JupyterHub)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubfleet.edu.courses import course_folder_path, fleet_file_groups, folder_access, group_properties, staff_role
from hubfleet.spec.edu import COURSE_NAME_RE, COURSE_ROLES, Course, CourseContent, group_name, parse_group

COURSE_NAMES = st.from_regex(COURSE_NAME_RE, fullmatch=True)


def test_group_names() -> None:
    assert [group_name("phys101", role) for role in COURSE_ROLES] == [
        "phys101-instructors",
        "phys101-tas",
        "phys101-students",
    ]


@given(COURSE_NAMES, st.sampled_from(COURSE_ROLES))
def test_parse_group_inverts_group_name(course: str, role: str) -> None:
    assert parse_group(group_name(course, role)) == (course, role)


@pytest.mark.parametrize("group", ["staff", "-students", "students", "x-student", "X-tas", "a b-tas", "ca-tas-x"])
def test_other_groups_are_no_course_groups(group: str) -> None:
    assert parse_group(group) is None


@pytest.mark.parametrize(("course", "role"), [("Bad", "student"), ("ok", "dean"), ("", "ta"), ("a/b", "ta")])
def test_bad_names_are_refused(course: str, role: str) -> None:
    with pytest.raises(ValueError):
        group_name(course, role)


def test_staff_role_reaches_the_courses_students_only() -> None:
    role = staff_role("ca")
    assert role["name"] == "course-ca-staff"
    assert role["groups"] == ["ca-instructors", "ca-tas"]
    assert {
        "list:users!group=ca-students",
        "read:users!group=ca-students",
        "servers!group=ca-students",
        "access:servers!group=ca-students",
    } <= set(role["scopes"])
    assert all("!group=ca-" in scope for scope in role["scopes"] if scope != "admin-ui")


def test_staff_role_scopes_exist_in_jupyterhub() -> None:
    from jupyterhub.roles import _validate_role_name
    from jupyterhub.scopes import _check_scopes_exist

    _check_scopes_exist(staff_role("ca")["scopes"])
    assert _validate_role_name(staff_role("c_1")["name"])


def test_course_folder_and_access() -> None:
    assert course_folder_path("/srv/hf", "uni", "ca") == Path("/srv/hf/uni/courses/ca")
    assert folder_access(lambda group: f"u_g_{group}", "ca") == {
        "u_g_ca-instructors": "write",
        "u_g_ca-tas": "write",
        "u_g_ca-students": "read",
    }


def test_fleet_file_groups_and_properties() -> None:
    course = Course(name="ca", title="A", instructors=["i"], students=["s1", "s2"], profile="lab", lms_context="c1")
    assert fleet_file_groups([course]) == {"ca-instructors": ["i"], "ca-tas": [], "ca-students": ["s1", "s2"]}
    assert group_properties(course, "student") == {
        "course": "ca",
        "role": "student",
        "origin": "fleet-file",
        "roster": "fleet-file",
        "folder": True,
        "title": "A",
        "lti_context": "c1",
        "profile": "lab",
    }
    with_content = course.model_copy(update={"content": CourseContent(repo="https://h/org/r.git", path="w1.ipynb")})
    assert group_properties(with_content, "ta")["content"] == {"repo": "https://h/org/r.git", "path": "w1.ipynb"}
