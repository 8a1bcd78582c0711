"""Who may do what in a course's exchange — one table for the REST API and the course pages alike.

A caller's roles come from the groups of their hub user model (`<course>-instructors`, `<course>-tas`,
`<course>-students`). Course roles decide, and nothing else: a hub admin who is not on the course's staff is
refused like anyone else (the fleet's operator has `hubfleet assignment …`).

- **Instructors and TAs** see the course (its pages, the gradebook, submissions, the roster), collect,
  autograde, grade by hand, regrade and export.
- **Instructors only** release assignments, release feedback to students, send grades to the LMS and sync the
  roster from the LMS: what students or the LMS see.
- **Students** fetch released assignments, submit, and read their own feedback.
"""

from __future__ import annotations

from typing import Any

from hubfleet.edu.courses import STAFF_ROLES
from hubfleet.edu.exchange.store import Forbidden
from hubfleet.spec.edu import parse_group

INSTRUCTOR_ACTIONS = {
    "release": "release assignments",
    "feedback": "release feedback",
    "passback": "send grades to the LMS",
    "roster-sync": "sync the roster from the LMS",
}
STAFF_ACTIONS = {
    "view": "see the course's assignments, grades and roster",
    "collect": "collect submissions",
    "grade": "grade",
    "export": "export the course's records",
}


class Roles:
    """A caller's roles in the hub's courses, from the groups of their user model."""

    def __init__(self, model: dict[str, Any]) -> None:
        self.name: str = model["name"]
        self.courses: dict[str, set[str]] = {}
        for group in model.get("groups") or []:
            parsed = parse_group(group)
            if parsed is not None:
                self.courses.setdefault(parsed[0], set()).add(parsed[1])

    def is_staff(self, course: str) -> bool:
        return bool(self.courses.get(course, set()) & set(STAFF_ROLES))

    def is_instructor(self, course: str) -> bool:
        return "instructor" in self.courses.get(course, set())

    def is_student(self, course: str) -> bool:
        return "student" in self.courses.get(course, set())

    def is_member(self, course: str) -> bool:
        return course in self.courses

    def role(self, course: str) -> str | None:
        """The caller's most privileged role in `course` (None: not a member)."""
        roles = self.courses.get(course, set())
        return next((role for role in (*STAFF_ROLES, "student") if role in roles), None)

    def may(self, course: str, action: str) -> bool:
        """Whether the caller may do `action` (a key of INSTRUCTOR_ACTIONS or STAFF_ACTIONS) in `course`."""
        if action in INSTRUCTOR_ACTIONS:
            return self.is_instructor(course)
        if action in STAFF_ACTIONS:
            return self.is_staff(course)
        raise ValueError(f"unknown action {action!r}")

    def require(self, course: str, action: str) -> None:
        """Forbidden (403, saying who may) unless the caller may do `action` in `course`."""
        if self.may(course, action):
            return
        if action in INSTRUCTOR_ACTIONS:
            raise Forbidden(f"only instructors of {course} may {INSTRUCTOR_ACTIONS[action]}")
        raise Forbidden(f"only instructors and TAs of {course} may {STAFF_ACTIONS[action]}")
