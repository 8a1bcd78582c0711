"""Landing on an assignment: `GET <hub>/hub/lti13/assignments/<course>/<name>`, where an LTI link to an assignment
sends the student once their server runs.

The released student version is fetched from the exchange's tables into `~/<course>/<name>` (by
`hubfleet.hub.home_files`, a short-lived process that becomes the user; never over an existing folder, so a
student's work stays as it is), then the assignment's first notebook opens in JupyterLab. Only members of the
course (and hub admins) may land there: anyone else gets 403, an assignment that is not released 404. A server that
is not running is started first (the spawn page comes back here).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from jupyterhub.handlers import BaseHandler
from jupyterhub.user import User
from tornado import web

from hubfleet.edu.course_store import course_of
from hubfleet.edu.exchange.store import Exchange, ExchangeError
from hubfleet.edu.links import LinkError, check_assignment_name
from hubfleet.hub.authenticators.lti._toolconfig import PREFIX
from hubfleet.spec.edu import COURSE_NAME_RE

if TYPE_CHECKING:
    from hubfleet.hub.authenticators.lti._authenticator import LTI13Authenticator

ASSIGNMENT_PATH = f"/{PREFIX}/assignments/([^/]+)/([^/]+)"
"""Below the hub's prefix (`/hubs/<hub>/hub`)."""

FETCH_TIMEOUT = 120.0


def assignment_url(base_url: str, course: str, name: str) -> str:
    """The landing page of assignment `name` of `course` (`base_url`: the hub's base URL, ending in `/`)."""
    return f"{base_url}hub/{PREFIX}/assignments/{quote(course, safe='')}/{quote(name, safe='')}"


def refusal(status: int, message: str) -> web.HTTPError:
    """An HTTP error whose page says `message` (shown as it is, never formatted)."""
    error = web.HTTPError(status)
    error.jupyterhub_message = message  # type: ignore[attr-defined]
    return error


def first_notebook(paths: list[str]) -> str | None:
    """What opens first: the shallowest notebook, by name."""
    notebooks = [path for path in paths if path.endswith(".ipynb")]
    return min(notebooks, key=lambda path: (path.count("/"), path)) if notebooks else None


class AssignmentLandingHandler(BaseHandler):
    """Fetches a released assignment into the caller's home and opens it (see the module docstring)."""

    @property
    def lti(self) -> LTI13Authenticator:
        return self.authenticator

    @web.authenticated
    async def get(self, course: str, name: str) -> None:
        user = self.current_user
        if not isinstance(user, User):
            raise refusal(403, "Only a hub user can open an assignment.")
        try:
            check_assignment_name(name)
        except LinkError as exc:
            raise refusal(404, exc.args[0]) from None
        if not COURSE_NAME_RE.fullmatch(course):
            raise refusal(404, f"There is no course {course[:64]!r} on this hub.")
        courses = {course_of({"name": group.name, "properties": group.properties}) for group in user.groups}
        if course not in {found[0] for found in courses if found} and not user.admin:
            raise refusal(403, f"You are not in course {course} on this hub.")
        exchange = Exchange(self.lti.sessions, self.lti.hub_name)
        try:
            files = await asyncio.to_thread(exchange.release_files, course, name)
        except ExchangeError as exc:
            raise refusal(exc.status, f"{exc.message}: it is not released yet, ask your instructor.") from None
        if not user.spawner.ready:
            self.redirect(f"{self.hub.base_url}spawn/{quote(user.name)}?{urlencode({'next': self.request.uri})}")
            return
        created = await self._put(user, f"{course}/{name}", files)
        self.log.info("assignment %s/%s for %s: %s", course, name, user.name, "fetched" if created else "was there")
        opened = first_notebook(sorted(files))
        path = f"lab/tree/{quote(course)}/{quote(name)}" + (f"/{quote(opened)}" if opened else "")
        self.redirect(f"{user.url}{path}")

    async def _put(self, user: User, folder: str, files: dict[str, bytes]) -> bool:
        """The files into the user's home as the user (False: the folder was there, nothing written)."""
        spawner: Any = user.spawner
        try:
            home, uid, gid = await asyncio.to_thread(spawner.home_for_export)
        except FileNotFoundError:
            raise refusal(409, "You have no home folder on this hub yet: start your server once.") from None
        command = [sys.executable, "-m", "hubfleet.hub.home_files", str(home), folder]
        if uid is not None:
            command += ["--uid", str(uid), "--gid", str(gid)]
        document = json.dumps({"files": {path: base64.b64encode(data).decode() for path, data in files.items()}})
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(document.encode()), FETCH_TIMEOUT)
        except TimeoutError:
            process.kill()  # ours, started above
            await process.wait()
            raise refusal(503, "Fetching the assignment took too long: try the link again.") from None
        try:
            answer = json.loads(out.splitlines()[-1])
        except (ValueError, IndexError):
            self.log.error("fetching %s for %s failed: %s", folder, user.name, err[-2000:].decode(errors="replace"))
            raise refusal(503, "The assignment could not be put in your home: ask the hub's admins.") from None
        if "status" in answer:
            raise refusal(int(answer["status"]), answer["message"])
        return bool(answer["created"])
