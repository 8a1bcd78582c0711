"""Cross checks of courses in a fleet file: profiles that exist, group names that do not clash, one role each."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubfleet.spec import SpecError, load

HEAD = "name: t\nhubs:\n  a:\n    auth: {type: native}\n"


def problems(tmp_path: Path, body: str) -> list[tuple[str, int, str]]:
    """(path, line, message) of every problem of a fleet file whose hub `a` has `body` (indented 4)."""
    path = tmp_path / "fleet.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load(path)
    return [(p.path, p.line, p.message) for p in info.value.problems]


def test_a_valid_course_loads(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        HEAD + "    profiles: [{name: small, default: true}, {name: lab, groups: [phys-instructors]}]\n"
        "    storage: {shared: [{name: data, access: {phys-students: read, phys-tas: write}}]}\n"
        "    courses:\n      - {name: phys, instructors: [ann], tas: [tom], students: [sue], profile: lab}\n",
        encoding="utf-8",
    )
    hub = load(path).hubs["a"]
    assert hub.courses[0].members == {"ann", "tom", "sue"}
    assert {"ann", "tom", "sue"} <= hub.users


def test_a_courses_profile_must_exist(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, "    courses:\n      - {name: phys, profile: gpu}\n")
    assert found[0] == "hubs.a.courses[0].profile" and found[1] == 6
    assert "uses profile 'gpu', which the hub does not have" in found[2]


def test_a_hub_group_must_not_take_a_course_groups_name(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, "    groups: {phys-tas: [x]}\n    courses:\n      - {name: phys}\n")
    assert found[0] == "hubs.a.groups.phys-tas"
    assert "also a group of one of the hub's courses" in found[2]


def test_one_role_per_member_and_lower_case_names(tmp_path: Path) -> None:
    found = problems(tmp_path, "    courses:\n      - {name: phys, instructors: [ann], students: [ann, Bob]}\n")
    both = "'ann' is listed in both instructors and students of course 'phys'"
    assert ("hubs.a.courses[0].students[0]", 6, both) in found
    assert any(p == "hubs.a.courses[0].students[1]" and "upper-case" in m for p, _, m in found)


def test_courses_is_a_reserved_shared_folder_name(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, "    storage: {shared: [{name: courses, access: {everyone: read}}]}\n")
    assert found[0] == "hubs.a.storage.shared[0].name" and "reserved for the course folders" in found[2]


def test_unknown_groups_name_the_course_groups_as_known(tmp_path: Path) -> None:
    body = "    profiles: [{name: lab, groups: [phys-student]}]\n    courses:\n      - {name: phys}\n"
    (found,) = problems(tmp_path, body)
    assert "unknown group 'phys-student'" in found[2]


LTI = (
    "    lti:\n      platforms:\n        - {issuer: https://lms.example, client_id: c, deployment_ids: [d],"
    " auth_login_url: https://lms.example/a, token_url: https://lms.example/t, jwks_url: https://lms.example/j}\n"
)


def test_course_content_from_git_is_checked_and_needs_lti(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    content = "{repo: 'https://github.com/org/notes.git', branch: main, path: week1/intro.ipynb}"
    path.write_text(HEAD + f"    courses:\n      - {{name: phys, content: {content}}}\n" + LTI, encoding="utf-8")
    course = load(path).hubs["a"].courses[0]
    assert course.content is not None and course.content.path == "week1/intro.ipynb"
    (found,) = problems(tmp_path, f"    courses:\n      - {{name: phys, content: {content}}}\n")
    assert found[0] == "hubs.a.courses[0].content" and "no lti: section" in found[2]
    bad = "{repo: 'file:///etc', branch: '-x', path: '../up'}"
    found = problems(tmp_path, f"    courses:\n      - {{name: phys, content: {bad}}}\n" + LTI)
    assert {p for p, _, _ in found} == {f"hubs.a.courses[0].content.{k}" for k in ("repo", "branch", "path")}
