"""Grade passback (LTI AGS): the gradebook's totals to the LMS, through a durable outbox.

`queue` writes each graded student's counting total into `exchange_scores_out`; `deliver` posts every row the LMS
does not have yet (score or maximum differ from what it acknowledged) to the assignment's line item (found by
`resourceId` = the assignment's name, or created), with the platform's cached client-credentials token. While the
LMS is down the rows stay pending and are delivered by a later attempt (the exchange service tries every
`passback_every` seconds; `hubfleet assignment passback` on demand). An unchanged score is never posted twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import or_, select, update

from hubfleet.edu.exchange.lms import course_link
from hubfleet.edu.exchange.store import Exchange, ExchangeError
from hubfleet.edu.exchange.tables import Assignment, LmsCourse, ScoreOut, utcnow
from hubfleet.edu.lti.keys import ToolKey
from hubfleet.edu.lti.services import ServiceClient, ServiceError, ServiceUnavailable
from hubfleet.edu.lti.tables import Identity
from hubfleet.spec.edu import LTIPlatform

log = logging.getLogger("hubfleet.exchange.passback")

CLAIM_SECONDS = 120
"""How long a deliverer holds a score it is posting (longer than every retry of one post takes)."""


SENT, QUEUED, FAILED, NOT_SENT = "sent", "queued", "failed", "not sent"
"""A student's score as the LMS has it: acknowledged; waiting for delivery; its last delivery failed (the error
says why; it is retried); or not in the outbox (never sent, or the grade changed after the last "send grades")."""


@dataclass
class ScoreStatus:
    """One graded student's score on its way to the LMS."""

    student: str
    state: str  # SENT, QUEUED, FAILED or NOT_SENT
    score: float  # the gradebook's total now
    maximum: float
    sent_score: float | None = None  # what the LMS acknowledged last
    sent_at: dt.datetime | None = None
    attempts: int = 0
    error: str | None = None


def score_status(exchange: Exchange, course: str, name: str) -> list[ScoreStatus]:
    """Every graded student of the assignment: where their score is on its way to the LMS, by name."""
    assignment = exchange.assignment(course, name)
    with exchange.sessions() as session:
        outbox = {
            o.student: o for o in session.scalars(select(ScoreOut).where(ScoreOut.assignment_id == assignment.id))
        }
    statuses = []
    for row in exchange.gradebook(course, name):
        if not row.graded:
            continue
        status = ScoreStatus(row.student, NOT_SENT, row.total, assignment.max_score)
        out = outbox.get(row.student)
        if out is not None:
            status.sent_score, status.sent_at, status.attempts = out.delivered_score, out.delivered_at, out.attempts
            if out.score != row.total or out.maximum != assignment.max_score:
                status.state = NOT_SENT
            elif not out.pending:
                status.state = SENT
            else:
                status.state, status.error = (FAILED, out.last_error) if out.last_error else (QUEUED, None)
        statuses.append(status)
    return statuses


@dataclass
class PassbackReport:
    """What one passback did."""

    queued: int = 0  # scores that changed since the LMS last acknowledged them
    delivered: int = 0  # scores the LMS acknowledged now
    pending: int = 0  # scores still waiting (LMS down, or a problem named in `errors`)
    errors: list[str] = field(default_factory=list)


class Passback:
    """Delivers one hub's scores to the LMSs its courses were launched from (one service client per platform)."""

    def __init__(
        self,
        exchange: Exchange,
        platforms: list[LTIPlatform],
        tool_key_file: Path | None,
        *,
        retries: int = 4,
        backoff: float = 0.5,
    ) -> None:
        self.exchange = exchange
        self.platforms = {(p.issuer, p.client_id): p for p in platforms}
        self.tool_key_file = tool_key_file
        self.retries = retries
        self.backoff = backoff
        self._clients: dict[tuple[str, str], ServiceClient] = {}
        self._http: httpx.AsyncClient | None = None
        self.delivering = 0
        """Deliveries under way (a hub stays awake while one is)."""

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def _client(self, link: LmsCourse) -> ServiceClient:
        key = (link.issuer, link.client_id)
        if key not in self._clients:
            platform = self.platforms.get(key)
            if platform is None:
                raise ExchangeError(f"issuer {link.issuer!r} with client id {link.client_id!r} is not registered")
            if self.tool_key_file is None or not self.tool_key_file.exists():
                raise ExchangeError("the hub has no LTI tool key yet (it is made when the hub first starts)")
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=20.0)
            tool_key = ToolKey.load_or_create(self.tool_key_file)
            self._clients[key] = ServiceClient(
                platform, tool_key, http=self._http, retries=self.retries, backoff=self.backoff
            )
        return self._clients[key]

    async def line_items(self, course: str) -> list[dict[str, Any]]:
        """The line items the LMS has in the course's context (ExchangeError: not linked; ServiceError: the LMS)."""
        link = course_link(self.exchange.sessions, self.exchange.hub, course)
        if link is None or not link.lineitems_url:
            raise ExchangeError(f"course {course} is not linked to an LMS with grades (no LTI launch with AGS yet)")
        return await self._client(link).line_items(link.lineitems_url)

    def queue(self, course: str, name: str) -> int:
        """Put the graded students' totals in the outbox; the number that differ from what the LMS has."""
        link = course_link(self.exchange.sessions, self.exchange.hub, course)
        if link is None or not link.lineitems_url:
            raise ExchangeError(f"course {course} is not linked to an LMS with grades (no LTI launch with AGS yet)")
        assignment = self.exchange.assignment(course, name)
        rows = [row for row in self.exchange.gradebook(course, name) if row.graded]
        changed = 0
        with self.exchange.sessions.begin() as session:
            for row in rows:
                out = session.get(ScoreOut, (assignment.id, row.student))
                if out is None:
                    out = ScoreOut(assignment_id=assignment.id, student=row.student, attempts=0)
                    session.add(out)
                if out.score != row.total or out.maximum != assignment.max_score:
                    out.score, out.maximum, out.updated_at = row.total, assignment.max_score, utcnow()
                changed += out.pending
        return changed

    async def send_assignment(self, course: str, name: str) -> PassbackReport:
        """Queue the assignment's scores, then deliver whatever of it is pending."""
        queued = self.queue(course, name)
        report = await self.deliver_pending(self.exchange.assignment(course, name).id)
        report.queued = queued
        return report

    async def deliver_pending(self, assignment_id: int | None = None) -> PassbackReport:
        """Post every pending score (of one assignment, or of the whole hub); stop at the first LMS outage."""
        self.delivering += 1
        try:
            return await self._deliver_pending(assignment_id)
        finally:
            self.delivering -= 1

    def pending(self) -> int:
        """How many scores of the hub wait to be sent."""
        return self._count_pending(None)

    async def _deliver_pending(self, assignment_id: int | None) -> PassbackReport:
        report = PassbackReport()
        with self.exchange.sessions() as session:
            query = select(Assignment).where(Assignment.hub == self.exchange.hub)
            if assignment_id is not None:
                query = query.where(Assignment.id == assignment_id)
            assignments = list(session.scalars(query))
            pending = {
                a.id: [o for o in session.scalars(select(ScoreOut).where(ScoreOut.assignment_id == a.id)) if o.pending]
                for a in assignments
            }
        for assignment in assignments:
            if not pending[assignment.id]:
                continue
            try:
                await self._deliver(assignment, pending[assignment.id], report)
            except ServiceUnavailable as error:
                self._failed(pending[assignment.id], str(error))
                report.errors.append(f"{assignment.course}/{assignment.name}: the LMS is unavailable: {error}")
                break
            except (ServiceError, ExchangeError) as error:
                self._failed(pending[assignment.id], str(error))
                report.errors.append(f"{assignment.course}/{assignment.name}: {error}")
        report.pending = self._count_pending(assignment_id)
        if report.delivered or report.errors:
            log.info("passback: %d delivered, %d pending; %s", report.delivered, report.pending, report.errors)
        return report

    async def _deliver(self, assignment: Assignment, rows: list[ScoreOut], report: PassbackReport) -> None:
        link = course_link(self.exchange.sessions, self.exchange.hub, assignment.course)
        if link is None or not link.lineitems_url:
            raise ExchangeError("the course is no longer linked to an LMS")
        client = self._client(link)
        line_item = assignment.lms_lineitem
        if line_item is None:
            line_item = await client.find_or_create_line_item(
                link.lineitems_url,
                resource_id=assignment.name,
                label=str(assignment.grading_spec.get("title") or assignment.name),
                score_maximum=assignment.max_score,
            )
            with self.exchange.sessions.begin() as session:
                session.get(Assignment, assignment.id).lms_lineitem = line_item
        for row in rows:
            with self.exchange.sessions() as session:
                sub = session.scalars(
                    select(Identity.sub).where(Identity.issuer == link.issuer, Identity.username == row.student)
                ).first()
            if sub is None:
                self._failed([row], "no LMS identity for this user (they never launched from the LMS)")
                report.errors.append(f"{assignment.course}/{assignment.name}: {row.student} has no LMS identity")
                continue
            if not self._claim(row):
                continue  # another deliverer (the service's loop, a `passback` command) is posting it
            await client.post_score(
                line_item, user_id=sub, score_given=row.score, score_maximum=row.maximum, timestamp=row.updated_at
            )
            self._delivered(row)
            report.delivered += 1

    def _claim(self, row: ScoreOut) -> bool:
        """Take the row for delivery (atomically, for CLAIM_SECONDS) unless it changed, was delivered or is taken."""
        now = utcnow()
        with self.exchange.sessions.begin() as session:
            result = session.execute(
                update(ScoreOut)
                .where(
                    ScoreOut.assignment_id == row.assignment_id,
                    ScoreOut.student == row.student,
                    ScoreOut.score == row.score,
                    ScoreOut.maximum == row.maximum,
                    or_(ScoreOut.claimed_until.is_(None), ScoreOut.claimed_until < now),
                    or_(
                        ScoreOut.delivered_score.is_(None),
                        ScoreOut.delivered_score != ScoreOut.score,
                        ScoreOut.delivered_maximum != ScoreOut.maximum,
                    ),
                )
                .values(claimed_until=now + dt.timedelta(seconds=CLAIM_SECONDS))
            )
            return result.rowcount == 1

    def _delivered(self, row: ScoreOut) -> None:
        with self.exchange.sessions.begin() as session:
            out = session.get(ScoreOut, (row.assignment_id, row.student))
            if out is not None and out.score == row.score and out.maximum == row.maximum:
                out.delivered_score, out.delivered_maximum = row.score, row.maximum
                out.delivered_at, out.last_error = utcnow(), None
            if out is not None:
                out.claimed_until = None

    def _failed(self, rows: list[ScoreOut], error: str) -> None:
        with self.exchange.sessions.begin() as session:
            for row in rows:
                out = session.get(ScoreOut, (row.assignment_id, row.student))
                if out is not None and out.pending:
                    out.attempts += 1
                    out.last_error = error[:2000]
                    out.claimed_until = None

    def _count_pending(self, assignment_id: int | None) -> int:
        with self.exchange.sessions() as session:
            query = select(ScoreOut).join(Assignment).where(Assignment.hub == self.exchange.hub)
            if assignment_id is not None:
                query = query.where(ScoreOut.assignment_id == assignment_id)
            return sum(1 for out in session.scalars(query) if out.pending)
