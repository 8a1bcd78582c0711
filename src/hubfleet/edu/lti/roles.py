"""One rule, for launches and roster syncs alike, from an LMS person's LIS context roles to their course role."""

from __future__ import annotations

from collections.abc import Iterable

LIS_MEMBERSHIP = "http://purl.imsglobal.org/vocab/lis/v2/membership"

COURSE_ROLE_NAMES = {
    # course role → the LIS context roles naming it: full URIs, and the simple names LTI 1.3 allows (NRPS uses them)
    "ta": (
        f"{LIS_MEMBERSHIP}/Instructor#TeachingAssistant",
        "Instructor#TeachingAssistant",
        f"{LIS_MEMBERSHIP}#TeachingAssistant",  # not in the vocabulary, but sent by some platforms
        "TeachingAssistant",
    ),
    "instructor": (f"{LIS_MEMBERSHIP}#Instructor", "Instructor", f"{LIS_MEMBERSHIP}#Administrator", "Administrator"),
    "student": (f"{LIS_MEMBERSHIP}#Learner", f"{LIS_MEMBERSHIP}/Learner#Learner", "Learner"),
}
"""Other roles (ContentDeveloper, Mentor, …) give no course role: staff rights over students' servers are for those
who teach the course."""


def course_role(roles: Iterable[str]) -> str | None:
    """`ta`, `instructor` or `student` from LIS roles (TA first: a TA's roles also hold its parent, Instructor);
    None when none of them is a course role."""
    held = set(roles)
    for role in ("ta", "instructor", "student"):
        if held.intersection(COURSE_ROLE_NAMES[role]):
            return role
    return None
