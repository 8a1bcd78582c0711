"""Deep linking on the hub: an instructor's `LtiDeepLinkingRequest` → the picker page → the signed response.

1. The launch endpoint validates the request like any launch (state, nonce, signature, deployment: see
   `hubfleet.edu.lti.launch`), refuses people who do not teach the course (403: students cannot start it), links
   the LMS course to its hub course and logs the instructor in; then `DeepLinkingLaunchHandler.answer` opens a
   picking session (single use, an hour at most) and shows the picker: the course's released assignments, the
   notebooks of its folder, and a form for git content — only what the platform's `accept_types` allow, one choice
   when it does not `accept_multiple`.
2. The picker posts the choice to `lti13/deep-linking`. Every choice is checked again against the course (an
   assignment must be released in it, a notebook must be in its folder, a repository a public git URL); the
   session is used up; the response (`hubfleet.edu.lti.deeplinking.response_token`, signed with the tool's key)
   goes back to the platform's `deep_link_return_url` in an auto-submitted form, with the request's `data`.
3. An assignment picked with "grade column" gets a `lineItem` (the platform makes the column with the link); a
   platform that ignores line items gets one made at once through AGS, and it becomes the assignment's column.

The page works inside an LMS iframe without the hub's cookies: the picking session's id in the form is what
authorises the choice (it is unguessable, single use and bound to the validated request).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hubfleet.edu.exchange.lineitems import link_line_item
from hubfleet.edu.exchange.store import Exchange
from hubfleet.edu.links import (
    AssignmentLink,
    Destination,
    GitContent,
    LinkError,
    Notebook,
    course_content,
    course_notebooks,
    git_content,
    git_pull_path,
)
from hubfleet.edu.lti.deeplinking import (
    MAX_ITEMS,
    RESOURCE_LINK,
    DeepLinkingSettings,
    LineItemRequest,
    PickSession,
    link_item,
    resource_link_item,
    response_token,
)
from hubfleet.edu.lti.launch import Launch, LaunchError
from hubfleet.edu.lti.services import SCOPE_LINEITEM, ServiceError
from hubfleet.hub.authenticators.lti._handlers import LaunchHandler, _LTIHandler
from hubfleet.hub.authenticators.lti._toolconfig import PREFIX
from hubfleet.hub.courses import OrmCourses
from hubfleet.spec.edu import group_name

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

DEEP_LINKING_PATH = f"/{PREFIX}/deep-linking"
"""Where the picker posts the instructor's choice (below the hub's prefix)."""

PICKER_TEMPLATE = "lti-deep-linking.html"
RETURN_TEMPLATE = "lti-deep-linking-return.html"


@dataclass
class Catalog:
    """What the picker offers from one course."""

    course: str
    title: str
    assignments: list[dict[str, Any]] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)
    content: GitContent | None = None

    def assignment(self, name: str) -> dict[str, Any] | None:
        return next((entry for entry in self.assignments if entry["name"] == name), None)


def _assignments(exchange: Exchange, course: str) -> list[dict[str, Any]]:
    return [
        {
            "name": assignment.name,
            "title": str(assignment.grading_spec.get("title") or assignment.name),
            "max_score": assignment.max_score,
            "due": assignment.due.strftime("%Y-%m-%d %H:%M UTC") if assignment.due else None,
            "column": assignment.lms_lineitem is not None,
        }
        for assignment in exchange.assignments(course)
    ]


class DeepLinkingLaunchHandler(LaunchHandler):
    """The launch endpoint: resource link launches as `LaunchHandler`; deep linking requests get the picker."""

    async def answer(
        self, launch: Launch, username: str, course: str | None, destination: Destination | None, courses: OrmCourses
    ) -> None:
        if not launch.is_deep_linking:
            await super().answer(launch, username, course, destination, courses)
            return
        assert course is not None  # a deep linking request comes from a course (checked before logging in)
        session = self.lti.picks.start(launch, username, course)
        self.log.info("LTI deep linking: %s picks content of course %s", username, course)
        await render_picker(self, session, await catalog(self, self.db, course))


async def catalog(handler: _LTIHandler, db: Session, course: str) -> Catalog:
    """The course's released assignments, the notebooks of its folder and its git content."""
    lti = handler.lti
    students = await OrmCourses(db).group(group_name(course, "student"))
    properties = (students or {}).get("properties") or {}
    assignments, notebooks = await asyncio.gather(
        asyncio.to_thread(_assignments, Exchange(lti.sessions, lti.hub_name), course),
        asyncio.to_thread(course_notebooks, lti.course_folder(course)),
    )
    return Catalog(
        course=course,
        title=str(properties.get("title") or course),
        assignments=assignments,
        notebooks=notebooks,
        content=course_content(course, properties),
    )


async def render_picker(handler: _LTIHandler, session: PickSession, found: Catalog, error: str | None = None) -> None:
    settings = session.launch.deep_linking
    assert settings is not None
    links = settings.accepts(RESOURCE_LINK)  # else only git content, as a plain link (checked at the launch)
    handler.set_status(400 if error else 200)
    page = await handler.render_template(
        PICKER_TEMPLATE,
        session=session.id,
        catalog=found,
        action=f"{handler.hub.base_url}{PREFIX}/deep-linking",
        links=links,
        multiple=settings.accept_multiple,
        lineitems=settings.accept_lineitem is not False or bool(_ags_lineitems(session.launch)),
        lms_title=settings.title,
        error=error,
    )
    handler.finish(page)


def _ags_lineitems(launch: Launch) -> str | None:
    """The context's line items URL when the launch lets the tool create line items (AGS)."""
    url = launch.ags_endpoint.get("lineitems")
    scopes = launch.ags_endpoint.get("scope") or []
    return url if isinstance(url, str) and SCOPE_LINEITEM in scopes else None


class DeepLinkingResponseHandler(_LTIHandler):
    """The picker's form POST → the signed `LtiDeepLinkingResponse`, posted on to the platform by the browser."""

    async def get(self) -> None:
        raise self.fail(LaunchError(405, "choose the content on the picker page: start again from the LMS"))

    async def post(self) -> None:
        session_id = self.get_body_argument("session", "")
        session = self.lti.picks.get(session_id)
        if session is None:
            raise self.fail(
                LaunchError(400, "unknown, expired or already used picking session: add the content again from the LMS")
            )
        launch = session.launch
        if self.get_body_argument("cancel", None) is not None:
            items: list[dict[str, Any]] = []
            notes = ["Nothing was added."]
        else:
            found = await catalog(self, self.db, session.course)
            try:
                items, notes = await self.items(session, found)
            except LaunchError as error:
                if error.status != 400:
                    raise self.fail(error) from None
                await render_picker(self, session, found, error=error.message)
                return
        if self.lti.picks.take(session_id) is None:  # another post of the same session got there first
            raise self.fail(LaunchError(400, "this picking session was already used: add the content again"))
        token = response_token(self.lti.tool_key, launch, items, message=" ".join(notes) or None)
        assert launch.deep_linking is not None
        self.log.info("LTI deep linking: %s added %d item(s) to %s", session.username, len(items), session.course)
        self.finish(
            await self.render_template(
                RETURN_TEMPLATE, return_url=launch.deep_linking.return_url, jwt=token, items=items, notes=notes
            )
        )

    async def items(self, session: PickSession, found: Catalog) -> tuple[list[dict[str, Any]], list[str]]:
        """The content items of the chosen destinations, and notes for the instructor (LaunchError 400 when a
        choice is not the course's, or more than the platform accepts)."""
        settings = session.launch.deep_linking
        assert settings is not None
        choices = list(dict.fromkeys(self.get_body_arguments("item")[: MAX_ITEMS + 1]))
        if not choices:
            raise LaunchError(400, "choose something to add (or cancel)")
        if len(choices) > (MAX_ITEMS if settings.accept_multiple else 1):
            limit = f"at most {MAX_ITEMS} items" if settings.accept_multiple else "one item here"
            raise LaunchError(400, f"the LMS accepts {limit}: choose fewer")
        items: list[dict[str, Any]] = []
        notes: list[str] = []
        for choice in choices:
            kind, _, value = choice[:1024].partition(":")
            if kind == "notebook":
                if value not in found.notebooks:
                    raise LaunchError(400, f"{value!r} is not a notebook of the course folder")
                items.append(self._link(settings, Notebook(value), value))
            elif kind == "assignment":
                assignment = found.assignment(value)
                if assignment is None:
                    raise LaunchError(400, f"{value!r} is not an assignment released in course {found.course}")
                line_item = await self._line_item(session, assignment, notes)
                items.append(self._link(settings, AssignmentLink(value), assignment["title"], line_item))
            elif kind == "git":
                items.append(self._git_item(settings))
            else:
                raise LaunchError(400, f"unknown choice {choice[:64]!r}")
        return items, notes

    def _link(
        self,
        settings: DeepLinkingSettings,
        destination: Destination,
        title: str,
        line_item: LineItemRequest | None = None,
    ) -> dict[str, Any]:
        if not settings.accepts(RESOURCE_LINK):
            raise LaunchError(400, f"the LMS takes no LTI links ({RESOURCE_LINK}) here: only git content can be added")
        return resource_link_item(
            settings, url=self.lti.urls.launch, title=title, custom=destination.custom(), line_item=line_item
        )

    def _git_item(self, settings: DeepLinkingSettings) -> dict[str, Any]:
        field_value = {name: self.get_body_argument(name, "").strip()[:2048] for name in ("repo", "branch", "path")}
        try:
            content = git_content(field_value["repo"], field_value["branch"] or None, field_value["path"] or None)
        except LinkError as exc:
            raise LaunchError(400, f"git content: {exc}") from None
        title = self.get_body_argument("title", "").strip()[:255] or content.target
        if settings.accepts(RESOURCE_LINK):
            return self._link(settings, content, title)
        url = f"{self.lti.hub_public_url}hub/user-redirect/{git_pull_path(content)}"
        return link_item(url=url, title=title, text=f"{content.repo} in your Jupyter server")

    async def _line_item(
        self, session: PickSession, assignment: dict[str, Any], notes: list[str]
    ) -> LineItemRequest | None:
        """The grade column asked for an assignment: in the item when the platform takes line items, else made now
        through AGS (and made the assignment's column); None when none was asked for."""
        name = assignment["name"]
        if self.get_body_argument(f"lineitem:{name}", None) is None:
            return None
        if assignment["max_score"] <= 0:
            notes.append(f"{assignment['title']} has no points: no grade column was made.")
            return None
        request = LineItemRequest(label=assignment["title"], score_maximum=assignment["max_score"], resource_id=name)
        launch = session.launch
        assert launch.deep_linking is not None
        if launch.deep_linking.accept_lineitem is not False:
            return request
        lineitems = _ags_lineitems(launch)
        if lineitems is None:
            notes.append(f"The LMS makes no grade columns here: {assignment['title']}'s is made when grades are sent.")
            return None
        platform = self.lti.validator.platforms[(launch.issuer, launch.client_id)]
        try:
            url = await self.lti.services(platform).find_or_create_line_item(
                lineitems, resource_id=name, label=request.label, score_maximum=request.score_maximum, tag=request.tag
            )
        except ServiceError as exc:
            raise LaunchError(502, f"the LMS did not make the grade column: {exc.message}") from None
        await asyncio.to_thread(
            link_line_item, self.lti.sessions, hub=self.lti.hub_name, course=session.course, name=name, line_item=url
        )
        notes.append(f"Grade column made for {assignment['title']}.")
        return None
