"""A course at the LMS peer and a hub's course linked to it, as LTI launches would leave them: the students' LMS
ids and the course's AGS line items recorded with the functions a launch uses (tests that are not about launching
can then use password logins)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hubfleet.common.settings import HubSettings
from hubfleet.db import open_database
from hubfleet.edu.exchange.lms import record_launch
from hubfleet.edu.exchange.settings import SERVICE_NAME
from hubfleet.edu.lti.launch import Launch
from hubfleet.edu.lti.tables import Identity
from hubfleet.hub.authenticators.lti import ToolURLs
from tests.edu.sources import graded_cell, solution_cell, write_source
from tests.helpers import RunningFleet
from tests.lms.peer import PeerLMS


@dataclass(frozen=True)
class LinkedCourse:
    """A test module's hub with course `course` linked to course `context` at an LMS peer labelled `lms`, whose
    learners are `students` (hub user → LMS id); `hub_yaml` writes the hub's part of the fleet file. The `lms` and
    `fleet` fixtures of tests/edu/conftest.py start both for a module that names one as `COURSE`."""

    hub: str
    password: str
    course: str
    lms: str
    context: str
    students: dict[str, str]
    hub_yaml: Callable[[PeerLMS], str]
    nrps: bool = False
    """Record the course's NRPS members URL too (as a launch from an LMS that offers it would)."""

    def exchange(self, fleet: RunningFleet, user: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the hub's exchange service (`path` below its URL) through the front door, as `user` with a
        token minted once (None: no credentials)."""
        headers = {"Authorization": f"token {fleet.token(self.hub, user)}"} if user else {}
        url = fleet.service_url(self.hub, SERVICE_NAME) + path
        return httpx.request(method, url, headers=headers, timeout=120, **kwargs)


def lti_hub_yaml(
    hub: str,
    password: str,
    lms: PeerLMS,
    courses: str,
    *,
    admins: tuple[str, ...] = (),
    profile: bool = True,
    lti: str = "",
) -> str:
    """Hub `hub`'s part of a test fleet file: shared-password logins (`admins` the hub's admins), no culling, one
    small default profile (`profile`), the `courses` given (a YAML list, unindented), LTI 1.3 with the peer `lms`
    as its platform (`lti`: more keys of `lti:`, unindented)."""
    admin_list = f", admins: [{', '.join(admins)}]" if admins else ""
    text = (
        f"{hub}:\n  auth: {{type: shared-password, password: {password}{admin_list}}}\n  culling: {{enabled: false}}\n"
    )
    if profile:
        text += "  profiles:\n    - {name: small, cpu: 1, memory: 512M, default: true}\n"
    text += "  courses:\n" + textwrap.indent(textwrap.dedent(courses), "    ")
    text += "  lti:\n" + textwrap.indent(textwrap.dedent(lti), "    ")
    return text + "    platforms:\n" + lms.platform_yaml(indent=6)


@contextlib.contextmanager
def peer_with_course(label: str, context: str, students: dict[str, str]) -> Iterator[PeerLMS]:
    """An LMS peer with one course, `context`, whose learners are `students` (hub user → LMS id)."""
    with PeerLMS(label=label, client_id=f"hubfleet-{label}", deployment_id=f"dep-{label}") as peer:
        peer.add_course(context, title=context, label=context.upper())
        for user, sub in students.items():
            peer.add_person(sub, name=user, email=f"{user}@uni.example")
            peer.enroll(context, sub, ["Learner"])
        yield peer


def link_course(
    fleet: RunningFleet,
    hub: str,
    course: str,
    lms: PeerLMS,
    context: str,
    students: dict[str, str],
    *,
    nrps: bool = False,
) -> None:
    """Register `hub` as the peer's tool, and record what the students' and an instructor's launches would: their
    LMS ids, and that `course` is the LMS's `context` with its AGS line items (and its NRPS members URL: `nrps`)."""
    urls = ToolURLs.of(fleet.hub_url(hub))
    lms.set_tool(login_url=urls.login, launch_url=urls.launch, jwks_url=urls.jwks)
    sessions = open_database(HubSettings.read(fleet.state_dir / "hubs" / hub / "settings.json").database_url)
    now = dt.datetime.now(dt.UTC)
    with sessions.begin() as session:
        for user, sub in students.items():
            session.add(Identity(issuer=lms.issuer, sub=sub, username=user, created=now, last_seen=now))
    launch = Launch(
        issuer=lms.issuer,
        client_id=lms.client_id,
        deployment_id=lms.deployment_id,
        sub=f"{context}-instructor",
        message_type="LtiResourceLinkRequest",
        target_link_uri=fleet.hub_url(hub),
        context_id=context,
        nrps_url=lms.nrps_url(context) if nrps else None,
        ags_endpoint={"lineitems": lms.lineitems_url(context)},
    )
    record_launch(sessions, hub=hub, course=course, launch=launch)


def source(root: Path) -> Path:
    """An assignment whose one test cell (1 point) passes when `mean` is right."""
    cells = [
        solution_cell("answer", "def mean(xs):\n    return sum(xs) / len(xs)"),
        graded_cell("check", 1, "assert mean([1, 3]) == 2", locked=True),
    ]
    return write_source(root / "hw-source", "name: means\ntitle: Means\n", cells, "means.ipynb")


def answered(files: dict[str, str], body: str) -> dict[str, Any]:
    """The released files with `mean` answered by `body`, as a submission's JSON body."""
    notebook = json.loads(base64.b64decode(files["means.ipynb"]))
    notebook["cells"][0]["source"] = f"def mean(xs):\n    return {body}"
    return {"files": {**files, "means.ipynb": base64.b64encode(json.dumps(notebook).encode()).decode()}}
