"""Which LMS grade column (AGS line item) an assignment's scores go to, when an LTI link chose one.

A deep link to an assignment may ask the LMS for a line item of its own (Deep Linking's `lineItem`), or the hub
creates one through AGS at once (when the LMS ignores `lineItem`). Either way the column belongs to the link: the
first launch of the link names it (the AGS claim's `lineitem`), and from then on grade passback
(`hubfleet.edu.exchange.passback`) posts the assignment's scores there. An assignment keeps the first column it
was given; passback's own column (found or made by the assignment's name as `resourceId`) is used only when no link
gave one.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.edu.exchange.tables import Assignment


def link_line_item(sessions: sessionmaker[Session], *, hub: str, course: str, name: str, line_item: str) -> bool:
    """Make `line_item` the column of assignment `name` of `course` unless it has one; True when it was set now.
    False (nothing changed) for an assignment that is not released or already has a column."""
    if not line_item or len(line_item) > 1024:
        return False
    with sessions.begin() as session:
        assignment = session.scalars(
            select(Assignment).where(Assignment.hub == hub, Assignment.course == course, Assignment.name == name)
        ).one_or_none()
        if assignment is None or assignment.lms_lineitem is not None:
            return False
        assignment.lms_lineitem = line_item
        return True


def line_item_of(sessions: sessionmaker[Session], *, hub: str, course: str, name: str) -> str | None:
    """The column assignment `name` of `course` posts its scores to, if it has one yet."""
    with sessions() as session:
        return session.scalars(
            select(Assignment.lms_lineitem).where(
                Assignment.hub == hub, Assignment.course == course, Assignment.name == name
            )
        ).one_or_none()
