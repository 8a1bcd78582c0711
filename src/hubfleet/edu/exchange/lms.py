"""Which LMS course a hub's course comes from, recorded from LTI launches (what grade passback needs)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from hubfleet.edu.exchange.tables import LmsCourse, utcnow
from hubfleet.edu.lti.launch import Launch


def record_launch(sessions: sessionmaker[Session], *, hub: str, course: str, launch: Launch) -> None:
    """Remember the launch's platform, context, AGS line-items URL and NRPS roster URL for `course` (idempotent; a
    launch without the AGS or NRPS claim keeps the URL an earlier launch gave)."""
    if not launch.context_id:
        return
    lineitems = launch.ags_endpoint.get("lineitems")
    with sessions.begin() as session:
        link = session.get(LmsCourse, (hub, course)) or LmsCourse(hub=hub, course=course)
        link.issuer = launch.issuer
        link.client_id = launch.client_id
        link.deployment_id = launch.deployment_id
        link.context_id = launch.context_id
        if isinstance(lineitems, str) and lineitems:
            link.lineitems_url = lineitems
        if launch.nrps_url:
            link.memberships_url = launch.nrps_url
        link.updated_at = utcnow()
        session.add(link)


def course_link(sessions: sessionmaker[Session], hub: str, course: str) -> LmsCourse | None:
    """The LMS course `course` is linked to, if a launch recorded one."""
    with sessions() as session:
        return session.get(LmsCourse, (hub, course))
