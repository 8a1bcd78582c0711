"""The exchange service's REST API: tornado handlers that check who is asking and call into the exchange
(:mod:`.store`, :mod:`.workflow`) through the :class:`~.service.Service` they are given; no logic of their own.
The course pages (HTML, for browsers) are in :mod:`.pages`.

Who may do what is :mod:`.access`: decided by the caller's course roles, from the groups of the user model the hub
returns for their token or OAuth cookie. Staff (instructors and TAs) see, collect, grade and export; only
instructors release, release feedback and send grades; students fetch the released files and submit.

REST API (under the service prefix, JSON; files travel as ``{"files": {path: base64}}``)::

    GET  api/courses/C/assignments                      list (any member)
    POST api/courses/C/assignments/A                    release a source folder (instructor)
    GET  api/courses/C/assignments/A/release            fetch the student version (any member; students' fetches
                                                        are recorded)
    POST api/courses/C/assignments/A/submissions        submit (student); instant feedback queued if asked for
    GET  api/courses/C/assignments/A/submissions        own submissions (student), all of them (staff)
    GET  api/courses/C/assignments/A/submissions/ID     one submission's files (staff)
    GET  api/courses/C/assignments/A/submissions/ID/check   its instant feedback: visible tests (own; staff)
    POST api/courses/C/assignments/A/submissions/ID/regrade grade it again, keeping manual scores (staff; 202)
    POST api/courses/C/assignments/A/collect            latest per student, marked collected (staff)
    POST api/courses/C/assignments/A/grade              autograde the collected submissions (staff; 202)
    GET  api/courses/C/assignments/A/progress           grading per submission, feedback pages made (staff)
    POST api/courses/C/assignments/A/feedback           make (release) the feedback pages (instructor; 202)
    GET  api/courses/C/assignments/A/feedback           own feedback page, HTML (student)
    GET  api/courses/C/assignments/A/grades[.csv]       the gradebook (staff)
    PUT  api/courses/C/assignments/A/grades/STUDENT     manual score of a cell (staff)
    POST api/courses/C/assignments/A/passback           queue and deliver the scores to the LMS (instructor)
    GET  api/courses/C/export                           the course's grades and submissions as a zip (staff)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from typing import TYPE_CHECKING, Any

import tornado.web
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed

from hubfleet.common.zipstream import send_zip, stream_zip
from hubfleet.edu.exchange import export, workflow
from hubfleet.edu.exchange.access import Roles
from hubfleet.edu.exchange.settings import SERVICE_NAME
from hubfleet.edu.exchange.store import Exchange, ExchangeError, Forbidden, check_name

if TYPE_CHECKING:
    from hubfleet.edu.exchange.service import Service

BODY_SLACK = 64 * 1024
"""Bytes a request body may have beyond the base64 of the largest upload (JSON keys, paths)."""


FEEDBACK_POLICY = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""Content-Security-Policy of feedback pages: no script runs, nothing loads, no access to the service's cookies."""


def body_limit(max_upload_bytes: int) -> int:
    """The largest request body the service reads: the base64 form of `max_upload_bytes`, plus some slack."""
    return (max_upload_bytes + 2) // 3 * 4 + BODY_SLACK


def encode_files(files: dict[str, bytes]) -> dict[str, str]:
    """Files as JSON-safe base64 text."""
    return {path: base64.b64encode(data).decode("ascii") for path, data in files.items()}


def decode_files(body: Any) -> dict[str, bytes]:
    """`{"files": {path: base64}}` → path → bytes (ExchangeError on anything else)."""
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict):
        raise ExchangeError('expected a JSON object {"files": {path: base64, …}}')
    decoded = {}
    for path, text in files.items():
        if not isinstance(text, str):
            raise ExchangeError(f"file {path!r}: expected base64 text")
        try:
            decoded[path] = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ExchangeError(f"file {path!r}: not valid base64") from None
    return decoded


log = logging.getLogger("hubfleet.exchange")


class BaseHandler(HubOAuthenticated, tornado.web.RequestHandler):
    """Authenticates through the hub (token or OAuth cookie), answers errors as JSON."""

    def initialize(self, service: Service, hub_auth: HubOAuth) -> None:
        self.service = service
        self.hub_auth = hub_auth

    @property
    def exchange(self) -> Exchange:
        return self.service.exchange

    async def prepare(self) -> None:
        model = await self.hub_auth.get_user(self, sync=False)
        if model is not None:
            try:
                model = self.check_hub_user(model)
            except UserNotAllowed:
                raise tornado.web.HTTPError(403, f"{model['name']} may not use the {SERVICE_NAME} service") from None
        self._hub_auth_user_cache = model
        self.current_user = model

    def roles(self) -> Roles:
        """The caller's course roles; 403 for callers that are not hub users."""
        model = self.current_user
        if not model:
            raise tornado.web.HTTPError(403, "log in through the hub, or send a hub API token")
        if model.get("kind", "user") != "user":
            raise tornado.web.HTTPError(403, "only hub users use the exchange")
        return Roles(model)

    def write_error(self, status_code: int, message: str | None = None, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        if message is None and exc_info and isinstance(exc_info[1], tornado.web.HTTPError):
            message = exc_info[1].log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message or self._reason, "status": status_code}))

    def _handle_request_exception(self, e: BaseException) -> None:
        # A refused request (bad input, no permission, not found, too large) is an answer, not a server error.
        if isinstance(e, ExchangeError):
            if not self._finished:
                self.send_error(e.status, message=e.message)
            return
        super()._handle_request_exception(e)

    def send_json(self, document: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document, default=str))


@tornado.web.stream_request_body
class ApiHandler(BaseHandler):
    """A REST endpoint whose request body is bounded: larger bodies get 413 before they are read."""

    def initialize(self, service: Service, hub_auth: HubOAuth) -> None:
        super().initialize(service, hub_auth)
        self._body = bytearray()
        self._too_large = False

    async def prepare(self) -> None:
        limit = body_limit(self.service.settings.max_upload_bytes)
        length = self.request.headers.get("Content-Length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise tornado.web.HTTPError(413, f"request body over the limit of {limit} bytes")
        self.request.connection.set_max_body_size(limit)
        await super().prepare()
        if not self.current_user:
            raise tornado.web.HTTPError(403, "log in through the hub, or send a hub API token")

    def data_received(self, chunk: bytes) -> None:
        self._body.extend(chunk)

    def json_body(self) -> Any:
        try:
            return json.loads(self._body or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ExchangeError("the request body is not JSON") from None

    def course(self, course: str, action: str | None = None, *, student: bool = False) -> Roles:
        """The caller's roles, after checking they are a member of `course` who may do `action`
        (`hubfleet.edu.exchange.access`), or a student of it."""
        check_name("course", course)
        roles = self.roles()
        if not roles.is_member(course):
            raise Forbidden(f"{roles.name} is not in course {course}")
        if action is not None:
            roles.require(course, action)
        if student and not roles.is_student(course):
            raise Forbidden(f"only students of {course} may do this")
        return roles


def _assignment_document(assignment: Any) -> dict[str, Any]:
    return {
        "course": assignment.course,
        "name": assignment.name,
        "title": assignment.grading_spec.get("title", assignment.name),
        "due": assignment.due.isoformat() if assignment.due else None,
        "late_policy": assignment.late_policy or None,
        "max_score": assignment.max_score,
        "released_at": assignment.released_at.isoformat(),
    }


def _submission_document(submission: Any) -> dict[str, Any]:
    return {
        "id": submission.id,
        "student": submission.student,
        "submitted_at": submission.submitted_at.isoformat(),
        "late": submission.late,
        "sha256": submission.sha256,
        "size": submission.size,
        "collected": submission.collected_at is not None,
    }


class AssignmentsHandler(ApiHandler):
    async def get(self, course: str) -> None:
        self.course(course)
        assignments = await self.service.run(self.exchange.assignments, course)
        self.send_json({"assignments": [_assignment_document(a) for a in assignments]})


class AssignmentHandler(ApiHandler):
    async def post(self, course: str, name: str) -> None:
        """Release: the body carries the source folder (with assignment.yaml); the student version is made here."""
        roles = self.course(course, "release")
        files = decode_files(self.json_body())
        assignment = await self.service.run(
            workflow.release_source_files,
            self.exchange,
            course,
            name,
            files,
            by=roles.name,
            max_bytes=self.service.settings.max_upload_bytes,
        )
        self.send_json(_assignment_document(assignment), status=201)


class ReleaseHandler(ApiHandler):
    async def get(self, course: str, name: str) -> None:
        roles = self.course(course)
        student = roles.name if roles.is_student(course) else None  # who fetched: the course pages show it
        files = await self.service.run(self.exchange.release_files, course, name, fetched_by=student)
        self.send_json({"course": course, "name": name, "files": encode_files(files)})


class SubmissionsHandler(ApiHandler):
    async def post(self, course: str, name: str) -> None:
        roles = self.course(course, student=True)
        files = decode_files(self.json_body())
        submission = await self.service.run(
            self.exchange.submit, course, name, roles.name, files, max_bytes=self.service.settings.max_upload_bytes
        )
        check = await self.service.run(self.service.request_check, course, name, roles.name, submission.id)
        self.send_json({**_submission_document(submission), "check": check}, status=201)

    async def get(self, course: str, name: str) -> None:
        roles = self.course(course)
        student = None if roles.is_staff(course) else roles.name
        submissions = await self.service.run(self.exchange.submissions, course, name, student)
        self.send_json({"submissions": [_submission_document(s) for s in submissions]})


def _check_document(submission: Any, check: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"submission": submission.id, "state": check.state if check else "none"}
    if check is not None:
        document.update(
            total=check.total,
            max_total=check.max_total,
            results=check.results,
            message=check.message,
            seconds=check.seconds,
        )
    return document


class CheckHandler(ApiHandler):
    """Instant feedback on a submission: its visible tests' results (the student's own; staff: anyone's)."""

    async def get(self, course: str, name: str, submission_id: str) -> None:
        roles = self.course(course)
        submission, check = await self.service.run(self.exchange.check, course, name, int(submission_id))
        if submission.student != roles.name and not roles.is_staff(course):
            raise Forbidden("students see only their own submissions")
        self.send_json(_check_document(submission, check))


class SubmissionHandler(ApiHandler):
    async def get(self, course: str, name: str, submission_id: str) -> None:
        self.course(course, "view")
        submission = await self.service.run(self.exchange.submission, course, name, int(submission_id))
        files = await self.service.run(self.exchange.submission_files, submission.id)
        self.send_json({**_submission_document(submission), "files": encode_files(files)})


class CollectHandler(ApiHandler):
    async def post(self, course: str, name: str) -> None:
        self.course(course, "collect")
        collected = await self.service.run(self.exchange.collect, course, name)
        self.send_json({"collected": [_submission_document(s) for s in collected]})


class GradeHandler(ApiHandler):
    async def post(self, course: str, name: str) -> None:
        roles = self.course(course, "grade")
        await self.service.run(self.exchange.assignment, course, name)  # 404 before starting anything
        started = self.service.start_grading(course, name, by=roles.name)
        self.send_json({"grading": "started" if started else "running"}, status=202)


class RegradeHandler(ApiHandler):
    async def post(self, course: str, name: str, submission_id: str) -> None:
        roles = self.course(course, "grade")
        await self.service.run(self.exchange.submission, course, name, int(submission_id))
        started = self.service.start_regrade(course, name, int(submission_id), by=roles.name)
        self.send_json({"grading": "started" if started else "running"}, status=202)


class ProgressHandler(ApiHandler):
    """The assignment's background work as it goes: grading per submission, feedback pages made (staff)."""

    async def get(self, course: str, name: str) -> None:
        self.course(course, "view")
        await self.service.run(self.exchange.assignment, course, name)
        self.send_json(self.service.progress(course, name))


class FeedbackHandler(ApiHandler):
    async def post(self, course: str, name: str) -> None:
        roles = self.course(course, "feedback")
        await self.service.run(self.exchange.assignment, course, name)
        started = self.service.start_feedback(course, name, by=roles.name)
        self.send_json({"feedback": "started" if started else "running"}, status=202)

    async def get(self, course: str, name: str) -> None:
        roles = self.course(course)
        student = self.get_argument("student", roles.name)
        if student != roles.name and not roles.is_staff(course):
            raise Forbidden("students see only their own feedback")
        html = await self.service.run(self.exchange.feedback, course, name, student)
        # Student notebooks may carry scripts: the page runs in a sandbox, without this origin's cookies.
        self.set_header("Content-Security-Policy", FEEDBACK_POLICY)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(html)


class GradesHandler(ApiHandler):
    async def get(self, course: str, name: str, extension: str | None = None) -> None:
        self.course(course, "view")
        if extension == ".csv":
            text = await self.service.run(self.exchange.gradebook_csv, course, name)
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="{course}-{name}-grades.csv"')
            self.finish(text)
            return
        rows = await self.service.run(self.exchange.gradebook, course, name)
        self.send_json(
            {
                "grading": self.service.job_state("grade", course, name),
                "feedback": self.service.job_state("feedback", course, name),
                "students": [row.__dict__ for row in rows],
            }
        )


class OverrideHandler(ApiHandler):
    async def put(self, course: str, name: str, student: str) -> None:
        roles = self.course(course, "grade")
        body = self.json_body()
        if not isinstance(body, dict):
            raise ExchangeError("expected a JSON object")
        notebook, cell, score = body.get("notebook"), body.get("cell"), body.get("score")
        comment = body.get("comment") or ""
        if not isinstance(notebook, str) or not isinstance(cell, str) or not isinstance(comment, str):
            raise ExchangeError("notebook and cell (text), score (number) and comment (text, optional) are needed")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ExchangeError("score must be a number")
        grade = await self.service.run(
            self.exchange.override, course, name, student, notebook, cell, float(score), roles.name, comment
        )
        self.send_json({"notebook": grade.notebook, "cell": grade.cell, "score": grade.score, "grader": grade.grader})


class PassbackHandler(ApiHandler):
    async def post(self, course: str, name: str) -> None:
        self.course(course, "passback")
        report = await self.service.passback.send_assignment(course, name)
        self.send_json(report.__dict__)


class CourseExportHandler(ApiHandler):
    async def get(self, course: str) -> None:
        """The course's grades and submissions as a zip (`hubfleet.edu.exchange.export`), streamed."""
        self.course(course, "export")
        planned = await self.service.run(export.plan, self.exchange, course)
        loop = asyncio.get_running_loop()
        chunks = stream_zip(
            lambda archive: export.write(self.exchange, planned, archive),
            max_bytes=planned.bound,
            max_entries=export.MAX_ENTRIES,
            run=lambda produce: loop.run_in_executor(self.service.executor, produce),
        )
        await send_zip(self, f"{self.service.settings.hub}-{course}-records.zip", chunks, log)


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """Finishes a browser's OAuth login with the hub (sets the service's cookie)."""

    def initialize(self, service: Service, hub_auth: HubOAuth) -> None:
        self.hub_auth = hub_auth


class HealthHandler(tornado.web.RequestHandler):
    """Answers 200 while the service runs, and whether it is busy (the supervisor's readiness check and what keeps a
    hub awake; no authentication, no course data)."""

    def initialize(self, service: Service) -> None:
        self.service = service

    def get(self) -> None:
        self.finish({"ok": True, "busy": self.service.busy()})


def routes(service: Service, hub_auth: HubOAuth) -> list[tuple[str, type, dict] | tuple[str, type]]:
    """The REST API's URL routes under the service's prefix, each with the arguments its handler is initialised
    with."""
    prefix = service.settings.prefix.rstrip("/")
    assignment = rf"{prefix}/api/courses/([^/]+)/assignments/([^/]+)"
    arguments = {"service": service, "hub_auth": hub_auth}
    return [
        (rf"{prefix}/oauth_callback", OAuthCallbackHandler, arguments),
        (rf"{prefix}/api/health", HealthHandler, {"service": service}),
        (rf"{prefix}/api/courses/([^/]+)/assignments/?", AssignmentsHandler, arguments),
        (rf"{assignment}/?", AssignmentHandler, arguments),
        (rf"{assignment}/release", ReleaseHandler, arguments),
        (rf"{assignment}/submissions/?", SubmissionsHandler, arguments),
        (rf"{assignment}/submissions/([0-9]{{1,12}})", SubmissionHandler, arguments),
        (rf"{assignment}/submissions/([0-9]{{1,12}})/check", CheckHandler, arguments),
        (rf"{assignment}/submissions/([0-9]{{1,12}})/regrade", RegradeHandler, arguments),
        (rf"{assignment}/collect", CollectHandler, arguments),
        (rf"{assignment}/grade", GradeHandler, arguments),
        (rf"{assignment}/progress", ProgressHandler, arguments),
        (rf"{assignment}/feedback", FeedbackHandler, arguments),
        (rf"{assignment}/grades(\.csv)?", GradesHandler, arguments),
        (rf"{assignment}/grades/([^/]+)", OverrideHandler, arguments),
        (rf"{assignment}/passback", PassbackHandler, arguments),
        (rf"{prefix}/api/courses/([^/]+)/export", CourseExportHandler, arguments),
    ]
