"""The course pages: the exchange service's HTML face for a course's instructors and TAs, behind the hub's own login
(OAuth, as the REST API). Plain server-rendered pages (tornado templates, one stylesheet, one small script for
local times and live progress); every POST is a form with the hub's XSRF token.

Handlers only: they check who is asking (:mod:`.access`) and call the functions the CLI and the REST API call —
:mod:`.store`, :mod:`.workflow`, :mod:`.passback`, :mod:`.sources`, `hubfleet.edu.roster` — through the
:class:`~.service.Service`. Under the service's prefix::

    /                                               your courses
    courses/C/                                      assignments: released, due, fetched, submitted, graded
    courses/C/roster  (POST roster/sync)            members, servers, submissions; LMS sync
    courses/C/new                                   upload or pick a source folder → a draft
    courses/C/drafts/D  (…/preview)                 the student version, previewed; release with a due date
    courses/C/assignments/A                         students' progress; collect, autograde, feedback, send grades
    courses/C/assignments/A/submissions/S           graded cells, manual grading, regrade (…/notebook: graded)
    courses/C/gradebook  (gradebook.csv)            students by assignment, sortable
    courses/C/lms                                   line items and passback status per student
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import nbformat
import tornado.web
from jupyterhub.services.auth import HubOAuth

from hubfleet.common.web import set_page_headers
from hubfleet.edu.courses import course_folder_path
from hubfleet.edu.exchange import passback as passback_module
from hubfleet.edu.exchange import sources, workflow
from hubfleet.edu.exchange.access import Roles
from hubfleet.edu.exchange.handlers import FEEDBACK_POLICY, BaseHandler
from hubfleet.edu.exchange.lms import course_link
from hubfleet.edu.exchange.roster_view import course_roster
from hubfleet.edu.exchange.store import ExchangeError, NotFound, check_name
from hubfleet.edu.lti.services import ServiceError
from hubfleet.edu.roster import RosterError, sync_from_lms
from hubfleet.spec.edu import group_name

if TYPE_CHECKING:
    from hubfleet.edu.exchange.service import Service

HERE = Path(__file__).parent
FLASH_COOKIE = "hubfleet-course-flash"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; frame-src 'self'; frame-ancestors 'none'; form-action 'self'"
)
GRADED_PAGE_POLICY = f"{FEEDBACK_POLICY}; frame-ancestors 'self'"
"""Graded notebooks and previews: sandboxed (no script, no cookies), shown in a frame of the course pages."""

LMS_TIMEOUT = 10.0


def settings(prefix: str) -> dict[str, Any]:
    """The tornado application settings the pages need (templates, static files under the service's prefix)."""
    return {
        "template_path": str(HERE / "templates"),
        "static_path": str(HERE / "static"),
        "static_url_prefix": f"{prefix.rstrip('/')}/static/",
    }


class Links:
    """The pages' URLs (path parts quoted)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/") + "/"

    def index(self) -> str:
        return self.prefix

    def course(self, course: str, page: str = "") -> str:
        return f"{self.prefix}courses/{quote(course)}/{page}"

    def assignment(self, course: str, name: str, page: str = "") -> str:
        return self.course(course, f"assignments/{quote(name)}" + (f"/{page}" if page else ""))

    def submission(self, course: str, name: str, submission_id: int, page: str = "") -> str:
        return self.assignment(course, name, f"submissions/{submission_id}" + (f"/{page}" if page else ""))

    def api(self, course: str, name: str, page: str) -> str:
        return f"{self.prefix}api/courses/{quote(course)}/assignments/{quote(name)}/{page}"


def when(value: dt.datetime | str | None, empty: str = "—") -> str:
    """A time (or its ISO text) as HTML: UTC on the server, shown in the reader's time zone by the page's script."""
    if value is None:
        return html.escape(empty)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    utc = value.astimezone(dt.UTC)
    return f'<time datetime="{utc.isoformat()}">{utc:%Y-%m-%d %H:%M} UTC</time>'


def utc_input(value: dt.datetime | None) -> str:
    """A time as a `datetime-local` field's value, in UTC (the page's script shows it in the reader's zone)."""
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")


def number(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


class PageError(tornado.web.HTTPError):
    """An error page with an explanation for the person reading it."""

    def __init__(self, status: int, explanation: str) -> None:
        super().__init__(status, explanation)
        self.explanation = explanation


class PageHandler(BaseHandler):
    """What every course page shares: the hub's login, XSRF-checked forms, the frame, errors as pages."""

    def initialize(self, service: Service, hub_auth: HubOAuth) -> None:
        super().initialize(service, hub_auth)
        self.links = Links(service.settings.prefix)

    def set_default_headers(self) -> None:
        set_page_headers(self, CONTENT_SECURITY_POLICY)

    async def prepare(self) -> None:
        if self.request.method not in ("GET", "HEAD"):
            try:
                self.check_xsrf_cookie()
            except tornado.web.HTTPError:
                raise PageError(
                    403,
                    "This form is out of date or came from another site (its XSRF check failed): reload the page "
                    "and try again.",
                ) from None
        await super().prepare()
        if not self.current_user:
            if self.request.method in ("GET", "HEAD"):
                self.redirect(self.get_login_url())
                return
            raise PageError(403, "Log in through the hub first.")

    def staff(self, course: str, action: str = "view") -> Roles:
        """The caller's roles after checking they may do `action` in `course` (a clear 403 page otherwise)."""
        check_name("course", course)
        roles = self.roles()
        if roles.may(course, action):
            return roles
        if roles.is_student(course) and action == "view":
            raise PageError(
                403,
                f"The pages of {course} are for its instructors and TAs. As a student, fetch and submit assignments "
                f"with `hubfleet-assignment` in your server; your courses are at {self.links.index()}.",
            )
        if not roles.is_member(course):
            raise PageError(403, f"You ({roles.name}) are not on the staff of course {course}.")
        roles.require(course, action)  # raises Forbidden, saying who may
        return roles

    def flash(self, message: str, kind: str = "ok") -> None:
        """A message for the next page this browser sees (after a redirect)."""
        cookie = json.dumps({"message": message[:2000], "kind": kind})
        self.set_signed_cookie(
            FLASH_COOKIE, cookie, expires_days=None, path=self.links.prefix, httponly=True, samesite="Strict"
        )

    def _take_flash(self) -> dict[str, str] | None:
        value = self.get_signed_cookie(FLASH_COOKIE, max_age_days=1)
        if value is None:
            return None
        self.clear_cookie(FLASH_COOKIE, path=self.links.prefix)
        try:
            return json.loads(value)
        except ValueError:
            return None

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        user = self.current_user or {}
        namespace.update(
            links=self.links,
            when=when,
            number=number,
            utc_input=utc_input,
            xsrf_token=self.xsrf_token.decode("ascii"),
            hub=self.service.settings.hub,
            hub_url=self.service.settings.hub_prefix,
            user=user.get("name"),
            roles=Roles(user) if user else None,
            message=self._take_flash() if self.request.method == "GET" else None,
            course=None,
            tab=None,
        )
        return namespace

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        explanation = kwargs.get("message") or getattr(error, "explanation", None) or getattr(error, "message", None)
        if explanation is None and isinstance(error, tornado.web.HTTPError):
            explanation = error.log_message
        self.render("error.html", status=status_code, explanation=explanation or self._reason)

    def back(self, url: str) -> None:
        """After a form: back to `url` (GET), with the flash message set."""
        self.redirect(url, status=303)

    async def students(self, course: str) -> list[str]:
        """The course's students, as the hub has them (empty when the hub does not answer)."""
        try:
            group = await self.service.hub_api.group(group_name(course, "student"))
        except httpx.HTTPError:
            return []
        return sorted(group["users"]) if group else []


class IndexPage(PageHandler):
    """`/`: the caller's courses, staff courses linked to their pages."""

    async def get(self) -> None:
        roles = self.roles()
        courses = []
        for course in sorted(roles.courses):
            assignments = await self.service.run(self.exchange.assignments, course)
            courses.append((course, roles.role(course), assignments))
        self.render("index.html", courses=courses)


class CoursePage(PageHandler):
    """`courses/C/`: the course's assignments with how far its students got."""

    async def get(self, course: str) -> None:
        roles = self.staff(course)
        students = await self.students(course)
        assignments = await self.service.run(self.exchange.assignments, course)
        rows = []
        for assignment in assignments:
            progress = await self.service.run(self.exchange.progress, course, assignment.name, students)
            rows.append((assignment, progress))
        self.render("course.html", course=course, tab="assignments", rows=rows, students=students, roles=roles)


class RosterPage(PageHandler):
    """`courses/C/roster`: every member, where they came from, their server and submissions; the LMS sync."""

    async def get(self, course: str) -> None:
        roles = self.staff(course)
        specs = self.service.hub_settings.courses if self.service.hub_settings else []
        try:
            roster = await course_roster(self.service.hub_api, self.exchange, course, specs)
        except httpx.HTTPError as exc:
            raise PageError(503, f"The hub does not answer right now ({type(exc).__name__}): try again.") from None
        has_lti = bool(self.service.hub_settings and self.service.hub_settings.lti)
        self.render("roster.html", course=course, tab="roster", roster=roster, roles=roles, has_lti=has_lti)


class RosterSyncAction(PageHandler):
    """`POST courses/C/roster/sync`: sync the roster from the LMS now (instructors)."""

    async def post(self, course: str) -> None:
        roles = self.staff(course, "roster-sync")
        if self.service.hub_settings is None:
            raise PageError(503, "The exchange cannot read the hub's settings: ask the operator to restart the hub.")
        try:
            report = await sync_from_lms(
                self.service.hub_api, self.service.hub_settings, course, sessions=self.exchange.sessions, by=roles.name
            )
        except RosterError as exc:
            self.flash(f"The roster was not synced: {exc.message}", "bad")
        else:
            self.flash(
                f"Synced from the LMS: {report.members} members, {len(report.added)} added, "
                f"{len(report.updated)} changed role, {len(report.removed)} removed."
            )
        self.back(self.links.course(course, "roster"))


class NewAssignmentPage(PageHandler):
    """`courses/C/new`: upload a source folder (a .zip, or its files) or pick one in the course folder; the
    student version is made at once and shown as a draft (instructors)."""

    def course_folder(self, course: str) -> Path | None:
        hub_settings = self.service.hub_settings
        if hub_settings is None:
            return None
        return course_folder_path(hub_settings.shared_root, hub_settings.hub, course)

    async def get(self, course: str) -> None:
        self.staff(course, "release")
        folder = self.course_folder(course)
        folders = await self.service.run(sources.assignment_folders, folder) if folder else []
        self.render("new.html", course=course, tab="new", folders=folders, limit=self.service.settings.max_upload_bytes)

    async def post(self, course: str) -> None:
        roles = self.staff(course, "release")
        limit = self.service.settings.max_upload_bytes
        picked = self.get_body_argument("folder", "").strip()
        uploads = [(f["filename"], f["body"]) for f in self.request.files.get("files", [])]
        try:
            if uploads and uploads[0][0]:
                files = sources.files_from_upload(uploads, max_bytes=limit)
                prepared = await self.service.run(workflow.prepare_files, files, max_bytes=limit)
                source = "upload " + ", ".join(name for name, _ in uploads[:3]) + (" …" if len(uploads) > 3 else "")
            elif picked:
                folder = self.course_folder(course)
                if folder is None:
                    raise ExchangeError("the course folder is not known here: upload the folder instead")
                prepared = await self.service.run(workflow.prepare_course_folder, folder, picked, max_bytes=limit)
                source = f"course folder {picked}"
            else:
                raise ExchangeError("choose a folder of the course folder, or upload the assignment's files")
        except ExchangeError as exc:
            self.flash(f"No student version was made: {exc.message}", "bad")
            self.back(self.links.course(course, "new"))
            return
        draft = await self.service.run(self.service.drafts.add, course, roles.name, source, prepared)
        self.back(self.links.course(course, f"drafts/{draft.id}"))


class DraftPage(PageHandler):
    """`courses/C/drafts/D`: the student version made from a source folder; release it with a due date."""

    async def get(self, course: str, draft_id: str) -> None:
        self.staff(course, "release")
        draft = await self.service.run(self.service.drafts.get, course, draft_id)
        try:
            existing = await self.service.run(self.exchange.assignment, course, draft.prepared.name)
        except NotFound:
            existing = None
        submissions = len(await self.service.run(self.exchange.latest, course, existing.name)) if existing else 0
        students = await self.students(course)
        self.render(
            "draft.html",
            course=course,
            tab="new",
            draft=draft,
            spec=draft.prepared.spec,
            existing=existing,
            submissions=submissions,
            students=students,
        )

    async def post(self, course: str, draft_id: str) -> None:
        roles = self.staff(course, "release")
        draft = await self.service.run(self.service.drafts.get, course, draft_id)
        due = self.due_argument()
        prepared = draft.prepared.choose(due=due, instant_feedback=self.get_body_argument("instant", "") == "on")
        assignment = await self.service.run(
            workflow.release_prepared,
            self.exchange,
            course,
            prepared,
            by=roles.name,
            max_bytes=self.service.settings.max_upload_bytes,
        )
        await self.service.run(self.service.drafts.remove, draft_id)
        if prepared.spec.instant_feedback:
            await self.service.run(self.service.warm_if_wanted)
        due_text = f"due {due:%Y-%m-%d %H:%M} UTC" if due else "no due date"
        self.flash(
            f"Released {assignment.name} to the students of {course}: {assignment.max_score:g} points, {due_text}."
        )
        self.back(self.links.assignment(course, assignment.name))

    def due_argument(self) -> dt.datetime | None:
        """The due date of the form: the browser's UTC time (its script converts), else the field read as UTC."""
        if self.get_body_argument("no_due", "") == "on":
            return None
        text = self.get_body_argument("due_utc", "").strip() or self.get_body_argument("due", "").strip()
        if not text:
            return None
        try:
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise PageError(400, f"{text!r} is not a date and time (e.g. 2026-12-01T23:59)") from None
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class DraftPreview(PageHandler):
    """`courses/C/drafts/D/preview`: the student version's notebooks, rendered (sandboxed, in a frame)."""

    async def get(self, course: str, draft_id: str) -> None:
        self.staff(course, "release")
        draft = await self.service.run(self.service.drafts.get, course, draft_id)
        page = await self.service.run(workflow.preview_html, draft.prepared)
        self.sandboxed(page)

    def sandboxed(self, page: str) -> None:
        self.set_header("Content-Security-Policy", GRADED_PAGE_POLICY)
        self.set_header("X-Frame-Options", "SAMEORIGIN")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page)


class AssignmentPage(PageHandler):
    """`courses/C/assignments/A`: every student's progress; collect, autograde (live), feedback, send grades."""

    async def get(self, course: str, name: str) -> None:
        roles = self.staff(course)
        assignment = await self.service.run(self.exchange.assignment, course, name)
        students = await self.students(course)
        progress = await self.service.run(self.exchange.progress, course, name, students)
        linked = await self.service.run(course_link, self.exchange.sessions, self.exchange.hub, course)
        lms = {}
        if linked is not None:
            lms = {
                s.student: s for s in await self.service.run(passback_module.score_status, self.exchange, course, name)
            }
        self.render(
            "assignment.html",
            course=course,
            tab="assignments",
            assignment=assignment,
            title=assignment.grading_spec.get("title") or name,
            progress=progress,
            roles=roles,
            jobs=self.service.progress(course, name),
            linked=linked,
            lms=lms,
            uncollected=sum(1 for row in progress if row.latest_id is not None and row.latest_id != row.collected_id),
        )


class AssignmentAction(PageHandler):
    """`POST courses/C/assignments/A/(collect|grade|feedback|passback)`."""

    async def post(self, course: str, name: str, verb: str) -> None:
        roles = self.staff(course, verb)
        await self.service.run(self.exchange.assignment, course, name)
        back = self.links.course(course, "lms") if self.get_body_argument("back", "") == "lms" else None
        if verb == "collect":
            collected = await self.service.run(self.exchange.collect, course, name)
            late = sum(s.late for s in collected)
            self.flash(f"Collected {len(collected)} submission(s) of {name} ({late} late).")
        elif verb == "grade":
            started = self.service.start_grading(course, name, by=roles.name)
            self.flash("Autograding started." if started else "Autograding of this assignment runs already.")
        elif verb == "feedback":
            started = self.service.start_feedback(course, name, by=roles.name)
            self.flash(
                "Making the feedback pages: students see theirs as each is made."
                if started
                else "Feedback is being made already."
            )
        else:
            report = await self.service.passback.send_assignment(course, name)
            kind = "bad" if report.errors else "ok"
            text = f"Grades of {name}: {report.queued} changed, {report.delivered} sent, {report.pending} waiting."
            self.flash(" ".join([text, *report.errors[:5]]), kind)
        self.back(back or self.links.assignment(course, name))


def _cell_sources(notebooks: dict[str, bytes]) -> dict[tuple[str, str], tuple[str, str]]:
    """(notebook, grade_id) → (cell type, source) of the graded notebooks' nbgrader cells."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for path, data in notebooks.items():
        try:
            notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
        except (UnicodeDecodeError, ValueError):
            continue
        for cell in notebook.cells:
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if grade_id:
                found[(path, grade_id)] = (cell.get("cell_type", "code"), str(cell.get("source", "")))
    return found


class SubmissionPage(PageHandler):
    """`courses/C/assignments/A/submissions/S`: each graded cell with its result; manual grading; regrade."""

    async def get(self, course: str, name: str, submission_id: str) -> None:
        roles = self.staff(course)
        assignment = await self.service.run(self.exchange.assignment, course, name)
        submission = await self.service.run(self.exchange.submission, course, name, int(submission_id))
        grades = await self.service.run(self.exchange.grades, submission.id)
        grading = await self.service.run(self.exchange.grading, submission.id)
        notebooks = await self.service.run(self.exchange.graded_files, submission.id)
        if not notebooks:
            notebooks = await self.service.run(self.exchange.submission_files, submission.id)
        history = await self.service.run(self.exchange.submissions, course, name, submission.student)
        counting = {row.student: row for row in await self.service.run(self.exchange.gradebook, course, name)}
        row = counting.get(submission.student)
        self.render(
            "submission.html",
            course=course,
            tab="assignments",
            assignment=assignment,
            submission=submission,
            grades=grades,
            grading=grading,
            cells=_cell_sources(notebooks),
            history=history,
            row=row if row and row.submission_id == submission.id else None,
            roles=roles,
            job=self.service.job("grade", course, name),
        )


class SubmissionNotebook(DraftPreview):
    """`…/submissions/S/notebook`: the notebooks as graded, with each cell's score (sandboxed, in a frame)."""

    async def get(self, course: str, name: str, submission_id: str) -> None:
        self.staff(course)
        page = await self.service.run(workflow.graded_page, self.exchange, course, name, int(submission_id))
        self.sandboxed(page)


class ManualGradeAction(PageHandler):
    """`POST …/submissions/S/grade`: a cell's score and comment, by hand (the counting submission only)."""

    async def post(self, course: str, name: str, submission_id: str) -> None:
        roles = self.staff(course, "grade")
        submission = await self.service.run(self.exchange.submission, course, name, int(submission_id))
        notebook, cell = self.get_body_argument("notebook", ""), self.get_body_argument("cell", "")
        text = self.get_body_argument("score", "").strip().replace(",", ".")
        comment = self.get_body_argument("comment", "").strip()
        try:
            score = float(text)
        except ValueError:
            score = math.nan
        here = self.links.submission(course, name, submission.id)
        if not math.isfinite(score):
            self.flash(f"{text!r} is not a score: give a number.", "bad")
            self.back(here)
            return
        counting = await self.service.run(self.exchange.collected, course, name)
        if not any(s.id == submission.id for s in counting):
            self.flash("Only the submission that counts (the student's latest collected one) is graded.", "bad")
            self.back(here)
            return
        try:
            grade = await self.service.run(
                self.exchange.override, course, name, submission.student, notebook, cell, score, roles.name, comment
            )
        except ExchangeError as exc:
            self.flash(f"Not saved: {exc.message}", "bad")
        else:
            self.flash(f"Saved {cell}: {grade.score:g} / {grade.max_score:g} for {submission.student}.")
        self.back(f"{here}#cell-{quote(cell)}")


class RegradeAction(PageHandler):
    """`POST …/submissions/S/regrade`: grade this submission again (its manual scores stay)."""

    async def post(self, course: str, name: str, submission_id: str) -> None:
        roles = self.staff(course, "grade")
        submission = await self.service.run(self.exchange.submission, course, name, int(submission_id))
        started = self.service.start_regrade(course, name, submission.id, by=roles.name)
        self.flash("Grading it again." if started else "This assignment's grading runs: try again when it is done.")
        self.back(self.links.submission(course, name, submission.id))


SORTS = ("student", "total")


class GradebookPage(PageHandler):
    """`courses/C/gradebook`: students by assignment, sortable by any column; `gradebook.csv` to download."""

    async def get(self, course: str, extension: str | None = None) -> None:
        self.staff(course)
        students = await self.students(course)
        book = await self.service.run(self.exchange.course_gradebook, course, students)
        if extension == ".csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header(
                "Content-Disposition", f'attachment; filename="{self.service.settings.hub}-{course}-gradebook.csv"'
            )
            self.finish(book.csv())
            return
        names = [name for name, _ in book.assignments]
        sort = self.get_query_argument("sort", "student")
        sort = sort if sort in (*SORTS, *names) else "student"
        descending = self.get_query_argument("order", "asc") == "desc"

        def key(row: Any) -> tuple:
            if sort == "student":
                return (row.student,)
            value = row.total if sort == "total" else row.scores.get(sort)
            return (value is None, value if value is not None else 0.0, row.student)

        rows = sorted(book.rows, key=key, reverse=descending)
        if descending and sort != "student":  # ungraded stay last
            rows = [r for r in rows if key(r)[0] is False] + [r for r in rows if key(r)[0] is True]
        self.render(
            "gradebook.html", course=course, tab="gradebook", book=book, rows=rows, sort=sort, descending=descending
        )


class LmsPage(PageHandler):
    """`courses/C/lms`: the course's LMS link, each assignment's line item and every student's passback status."""

    async def get(self, course: str) -> None:
        roles = self.staff(course)
        link = await self.service.run(course_link, self.exchange.sessions, self.exchange.hub, course)
        assignments = await self.service.run(self.exchange.assignments, course)
        statuses = {}
        for assignment in assignments:
            statuses[assignment.name] = await self.service.run(
                passback_module.score_status, self.exchange, course, assignment.name
            )
        items: list[dict[str, Any]] = []
        lms_error = None
        if link is not None and link.lineitems_url:
            try:
                items = await asyncio.wait_for(self.service.passback.line_items(course), LMS_TIMEOUT)
            except (ServiceError, ExchangeError, TimeoutError) as exc:
                lms_error = getattr(exc, "message", None) or f"the LMS did not answer within {LMS_TIMEOUT:g} s"
        by_resource = {item.get("resourceId"): item for item in items}
        self.render(
            "lms.html",
            course=course,
            tab="lms",
            link=link,
            assignments=assignments,
            statuses=statuses,
            items=by_resource,
            lms_error=lms_error,
            roles=roles,
        )


def routes(service: Service, hub_auth: HubOAuth) -> list[tuple[str, type, dict]]:
    """The course pages' URL routes under the service's prefix."""
    prefix = service.settings.prefix.rstrip("/")
    course = rf"{prefix}/courses/([^/]+)"
    assignment = rf"{course}/assignments/([^/]+)"
    submission = rf"{assignment}/submissions/([0-9]{{1,12}})"
    arguments = {"service": service, "hub_auth": hub_auth}
    pages: list[tuple[str, type]] = [
        (rf"{prefix}/?", IndexPage),
        (rf"{course}/?", CoursePage),
        (rf"{course}/roster", RosterPage),
        (rf"{course}/roster/sync", RosterSyncAction),
        (rf"{course}/new", NewAssignmentPage),
        (rf"{course}/drafts/([A-Za-z0-9_-]{{16,64}})", DraftPage),
        (rf"{course}/drafts/([A-Za-z0-9_-]{{16,64}})/preview", DraftPreview),
        (rf"{course}/gradebook(\.csv)?", GradebookPage),
        (rf"{course}/lms", LmsPage),
        (rf"{assignment}/?", AssignmentPage),
        (rf"{assignment}/(collect|grade|feedback|passback)", AssignmentAction),
        (rf"{submission}/?", SubmissionPage),
        (rf"{submission}/notebook", SubmissionNotebook),
        (rf"{submission}/grade", ManualGradeAction),
        (rf"{submission}/regrade", RegradeAction),
    ]
    return [(pattern, handler, arguments) for pattern, handler in pages]
