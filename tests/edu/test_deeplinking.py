"""LTI Deep Linking and course content from git, end to end: the real LMS peer (lti1p3platform plus our Deep Linking
part, tests/lms/peer.py) asks a real hub for content; the instructor picks on the hub's picker page; the peer
verifies the signed response and makes the links; students launch them into their real servers, where assignments
are fetched into their homes and nbgitpuller pulls from a real git server (`git daemon` on loopback).

One module-scoped fleet (one hub: shared-password login plus `lti:`, course `ds` linked to the LMS course ctx-DL
with git `content`, a second course `other`) serves every test; the tests build on the links the first one makes.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import nbformat
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from playwright import sync_api as playwright_api
from sqlalchemy import select

from hubfleet.common.settings import HubSettings
from hubfleet.db import open_database
from hubfleet.edu.exchange.tables import Assignment
from hubfleet.edu.lti.keys import ToolKey
from hubfleet.hub.authenticators.lti import ToolURLs
from tests.browser import chromium
from tests.edu.git_daemon import CourseRepository, git_daemon
from tests.edu.sources import graded_cell, solution_cell, write_source
from tests.helpers import RunningFleet, running_fleet, unique_hub
from tests.lms.courses import lti_hub_yaml
from tests.lms.peer import DL_CLAIM, LTI_CLAIM, PeerLMS

H = unique_hub("dl")
PASSWORD = "deeplink-test-password"
CONTEXT = "ctx-DL"
READY_TIMEOUT = 180.0
PEOPLE = {  # sub → (e-mail, LMS role in ctx-DL); hub names from the e-mails
    "s-prof": ("prof@uni.example", "Instructor"),
    "s-tara": ("tara@uni.example", "TeachingAssistant"),
    "s-ana": ("ana@uni.example", "Learner"),
    "s-ben": ("ben@uni.example", "Learner"),
}
DATA = {"state": "opaque-123", "n": 1}  # the platform's deep linking `data`: must come back unchanged

pytestmark = pytest.mark.needs("root", "cgroups", "user_env")


def notebook(text: str) -> str:
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    book.cells = [nbformat.v4.new_markdown_cell(text)]
    return nbformat.writes(book)


@pytest.fixture(scope="module")
def git_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, CourseRepository]]:
    root = tmp_path_factory.mktemp("git")
    repository = CourseRepository(root, "ds-material")
    repository.commit({"week1.ipynb": notebook("# Week 1"), "README.md": "Data Science material\n"}, "week 1")
    with git_daemon(root) as base:
        yield f"{base}ds-material.git", repository


def hub_yaml(lms: PeerLMS, repo: str) -> str:
    courses = f"""\
        - name: ds
          title: Data Science
          roster: lms
          lms_context: {CONTEXT}
          content: {{repo: "{repo}", branch: main, path: week1.ipynb}}
        - name: other
          students: [olga]
        """
    return lti_hub_yaml(H, PASSWORD, lms, courses, admins=("boss",))


@pytest.fixture(scope="module")
def lms() -> Iterator[PeerLMS]:
    with PeerLMS(label="canvas", client_id="hubfleet-dl", deployment_id="dep-1") as peer:
        peer.add_course(CONTEXT, title="Data Science", label="DS")
        for sub, (email, role) in PEOPLE.items():
            peer.add_person(sub, name=email.split("@")[0].title(), email=email)
            peer.enroll(CONTEXT, sub, [role])
        yield peer


def assignment_source(root: Path) -> Path:
    """hw1: one solution cell and one autograded test (2 points)."""
    cells = [
        solution_cell("square", "def square(x):\n    return x * x"),
        graded_cell("t", 2, "assert square(3) == 9"),
    ]
    return write_source(root / "hw1", "name: hw1\ntitle: Squares\n", cells, "squares.ipynb")


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, lms: PeerLMS, git_root: tuple[str, CourseRepository]
) -> Iterator[RunningFleet]:
    root = tmp_path_factory.mktemp("deeplink")
    with running_fleet(root, hub_yaml(lms, git_root[0]), [H], PASSWORD) as running:
        urls = ToolURLs.of(running.hub_url(H))
        lms.set_tool(login_url=urls.login, launch_url=urls.launch, jwks_url=urls.jwks)
        running.extra["urls"] = urls
        running.cli("assignment", "release", H, "ds", str(assignment_source(root)), "--by", "prof")
        folder = running.shared_root / H / "courses" / "ds" / "week3"
        folder.mkdir(parents=True)
        (folder / "intro.ipynb").write_text(notebook("# Week 3, in the course folder"))
        yield running


def api(fleet: RunningFleet, path: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
    return fleet.hub_api(H, method, path, **kwargs)


def follow_launch(fleet: RunningFleet, browser: httpx.Client, response: httpx.Response) -> tuple[str, str]:
    """A launch's answer followed as a browser would until the user's server runs: (user name, landing target)."""
    name, target = fleet.follow_to_server(H, browser, response, READY_TIMEOUT)
    # the server's own login (OAuth with the hub) happens on the first page of it the browser opens
    opened = browser.get(f"{fleet.url}{target}", follow_redirects=True)
    assert opened.status_code == 200, (str(opened.url), opened.text[:300])
    return name, target


def server_headers(browser: httpx.Client, fleet: RunningFleet, user: str) -> dict[str, str]:
    """What JupyterLab sends with its API calls (the server's XSRF cookie echoed)."""
    path = f"/hubs/{H}/user/{user}/"
    xsrf = [c.value for c in browser.cookies.jar if c.name == "_xsrf" and (c.path or "").startswith(path)]
    return {"X-XSRFToken": xsrf[-1] if xsrf else "", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"}


def contents(browser: httpx.Client, fleet: RunningFleet, user: str, path: str) -> httpx.Response:
    return browser.get(
        f"{fleet.hub_url(H)}user/{user}/api/contents/{path}",
        params={"content": "1"},
        headers=server_headers(browser, fleet, user),
    )


def save(browser: httpx.Client, fleet: RunningFleet, user: str, path: str, book: Any) -> None:
    saved = browser.put(
        f"{fleet.hub_url(H)}user/{user}/api/contents/{path}",
        json={"type": "notebook", "format": "json", "content": book},
        headers=server_headers(browser, fleet, user),
    )
    assert saved.status_code == 200, saved.text[:300]


def picker_session(page: str) -> str:
    start = page.index('name="session" value="') + len('name="session" value="')
    return page[start : page.index('"', start)]


def pick(fleet: RunningFleet, browser: httpx.Client, page: str, fields: list[tuple[str, str]]) -> httpx.Response:
    """Submit the picker's form with `fields` (plus the session from `page`)."""
    form: dict[str, list[str]] = {"session": [picker_session(page)]}
    for name, value in fields:
        form.setdefault(name, []).append(value)
    return browser.post(f"{fleet.hub_url(H)}hub/lti13/deep-linking", data=form, timeout=120)


def sessions(fleet: RunningFleet) -> Any:
    return open_database(HubSettings.read(fleet.state_dir / "hubs" / H / "settings.json").database_url)


@pytest.fixture(scope="module")
def links(fleet: RunningFleet, lms: PeerLMS, git_root: tuple[str, CourseRepository]) -> dict[str, str]:
    """The instructor's deep linking: a notebook, an assignment with a grade column, and git content → link ids."""
    repo, _ = git_root
    with httpx.Client(timeout=READY_TIMEOUT) as browser:
        page = lms.deep_link(browser, sub="s-prof", context_id=CONTEXT, data=DATA)
        assert page.status_code == 200, page.text[:500]
        for offered in ("assignment:hw1", "notebook:week3/intro.ipynb", 'value="git"', repo):
            assert offered in page.text, offered
        answer = pick(
            fleet,
            browser,
            page.text,
            [
                ("item", "notebook:week3/intro.ipynb"),
                ("item", "assignment:hw1"),
                ("lineitem:hw1", "1"),
                ("item", "git"),
                ("repo", repo),
                ("branch", "main"),
                ("path", "week1.ipynb"),
                ("title", "Week 1 from git"),
            ],
        )
        assert answer.status_code == 200, answer.text[:500]
        returned = lms.post_deep_link_return(browser, answer.text)
    assert returned.status_code == 200, returned.text
    made = lms.deep_link_returns[-1]
    by_kind = {}
    for link_id in made["links"]:
        custom = lms.links(CONTEXT)[link_id]["custom"]
        kind = "notebook" if "notebook" in custom else "assignment" if "assignment" in custom else "git"
        by_kind[kind] = link_id
    return by_kind


def test_the_lms_verifies_the_instructors_deep_linking_response(
    fleet: RunningFleet, lms: PeerLMS, links: dict[str, str], git_root: tuple[str, CourseRepository]
) -> None:
    """Signature (the peer fetched the tool's JWKS and checked the kid), claims, the data echoed, the items."""
    made = lms.deep_link_returns[-1]
    tool_kid = httpx.get(fleet.extra["urls"].jwks).json()["keys"][0]["kid"]
    claims = made["claims"]
    assert made["header"]["kid"] == tool_kid and made["header"]["alg"] == "RS256"
    assert (claims["iss"], claims["aud"]) == (lms.client_id, lms.issuer)
    assert claims[f"{LTI_CLAIM}deployment_id"] == lms.deployment_id
    assert claims[f"{LTI_CLAIM}message_type"] == "LtiDeepLinkingResponse"
    assert made["data"] == DATA
    items = {
        item["custom"].get("notebook") or item["custom"].get("assignment") or "git": item for item in made["items"]
    }
    assert items["week3/intro.ipynb"]["type"] == "ltiResourceLink"
    assert items["week3/intro.ipynb"]["url"] == fleet.extra["urls"].launch
    assert items["hw1"]["lineItem"] == {"label": "Squares", "scoreMaximum": 2.0, "resourceId": "hw1", "tag": "hubfleet"}
    assert items["git"]["custom"] == {"git_repo": git_root[0], "git_branch": "main", "git_path": "week1.ipynb"}
    assert items["git"]["title"] == "Week 1 from git"
    assert set(links) == {"notebook", "assignment", "git"}
    (column,) = [item for item in lms.line_items(CONTEXT) if item.get("resourceLinkId") == links["assignment"]]
    assert column["resourceId"] == "hw1" and column["scoreMaximum"] == 2.0
    prof = api(fleet, "users/prof").json()
    assert "ds-instructors" in prof["groups"]


def test_a_student_lands_in_the_notebook_the_link_names(
    fleet: RunningFleet, lms: PeerLMS, links: dict[str, str]
) -> None:
    with httpx.Client(timeout=READY_TIMEOUT) as browser:
        name, target = follow_launch(
            fleet, browser, lms.launch_link(browser, sub="s-ana", context_id=CONTEXT, link_id=links["notebook"])
        )
        assert name == "ana"
        assert target == f"/hubs/{H}/user/ana/lab/tree/courses/ds/week3/intro.ipynb"
        found = contents(browser, fleet, "ana", "courses/ds/week3/intro.ipynb")
        assert found.status_code == 200 and found.json()["type"] == "notebook", found.text[:300]


def test_an_assignment_link_fetches_it_into_the_home_and_grades_go_to_its_column(
    fleet: RunningFleet, lms: PeerLMS, links: dict[str, str]
) -> None:
    link = lms.links(CONTEXT)[links["assignment"]]
    with httpx.Client(timeout=READY_TIMEOUT) as browser:
        name, target = follow_launch(
            fleet, browser, lms.launch_link(browser, sub="s-ana", context_id=CONTEXT, link_id=links["assignment"])
        )
        assert target == f"/hubs/{H}/hub/lti13/assignments/ds/hw1"
        landed = browser.get(f"{fleet.url}{target}", follow_redirects=False)
        assert landed.status_code == 302, landed.text[:300]
        assert landed.headers["location"] == f"/hubs/{H}/user/ana/lab/tree/ds/hw1/squares.ipynb"
        fetched = contents(browser, fleet, name, "ds/hw1/squares.ipynb")
        assert fetched.status_code == 200, fetched.text[:300]
        cells = fetched.json()["content"]["cells"]
        assert "BEGIN SOLUTION" not in cells[0]["source"]  # the student version
        # the student's work, then the link again: nothing is overwritten
        work = nbformat.from_dict(fetched.json()["content"])
        work.cells[0].source = "def square(x):\n    return x ** 2"
        save(browser, fleet, name, "ds/hw1/squares.ipynb", work)
        again = browser.get(f"{fleet.url}{target}", follow_redirects=False)
        assert again.status_code == 302
        kept = contents(browser, fleet, name, "ds/hw1/squares.ipynb").json()["content"]["cells"][0]["source"]
        assert kept == "def square(x):\n    return x ** 2"
        files = {"squares.ipynb": base64.b64encode(json.dumps(work).encode()).decode()}
    with sessions(fleet)() as session:
        (column,) = session.scalars(
            select(Assignment.lms_lineitem).where(Assignment.hub == H, Assignment.name == "hw1")
        )
    assert column == link["lineitem"]
    # submit, collect, grade, pass back: the score lands in the link's column
    token = api(fleet, "users/ana/tokens", "POST", json={"note": "deeplink test", "expires_in": 600}).json()["token"]
    submitted = httpx.post(
        f"{fleet.hub_url(H)}services/assignments/api/courses/ds/assignments/hw1/submissions",
        headers={"Authorization": f"token {token}"},
        json={"files": files},
        timeout=120,
    )
    assert submitted.status_code in (200, 201), submitted.text[:300]
    fleet.cli("assignment", "collect", H, "ds", "hw1")
    fleet.cli("assignment", "grade", H, "ds", "hw1")
    fleet.cli("assignment", "passback", H, "ds", "hw1")
    (score,) = [s for s in lms.scores(CONTEXT) if s["userId"] == "s-ana"]
    assert score["scoreOf"] == link["lineitem"] and score["scoreGiven"] == 2


def pull(browser: httpx.Client, fleet: RunningFleet, user: str, target: str) -> list[dict[str, Any]]:
    """What nbgitpuller's page does in a browser: open its event stream (which pulls), read it to the end."""
    assert target.startswith(f"/hubs/{H}/user/{user}/git-pull?"), target
    page = browser.get(f"{fleet.url}{target}")
    assert page.status_code == 200 and "nbgitpuller" in page.text.lower(), page.text[:300]
    api_url = f"{fleet.url}{target.replace('/git-pull?', '/git-pull/api?', 1)}"
    events = []
    with browser.stream("GET", api_url, timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events and events[-1]["phase"] == "finished", events[-3:]
    return events


def test_course_content_is_pulled_on_launch_and_a_second_pull_keeps_the_students_edits(
    fleet: RunningFleet, lms: PeerLMS, git_root: tuple[str, CourseRepository]
) -> None:
    _, repository = git_root
    with httpx.Client(timeout=READY_TIMEOUT) as browser:
        name, target = follow_launch(fleet, browser, lms.launch(browser, sub="s-ben", context_id=CONTEXT))
        query = parse_qs(urlparse(target).query)
        assert query["targetpath"] == ["ds/material"] and query["urlpath"] == ["lab/tree/ds/material/week1.ipynb"]
        pull(browser, fleet, name, target)
        first = contents(browser, fleet, name, "ds/material/week1.ipynb")
        assert first.status_code == 200, first.text[:300]
        edited = nbformat.from_dict(first.json()["content"])
        edited.cells.append(nbformat.v4.new_code_cell("print('my own work')"))
        save(browser, fleet, name, "ds/material/week1.ipynb", edited)
        repository.commit({"week2.ipynb": notebook("# Week 2"), "README.md": "Data Science, weeks 1-2\n"}, "week 2")
        again = lms.launch(browser, sub="s-ben", context_id=CONTEXT)
        _, second_target = follow_launch(fleet, browser, again)
        pull(browser, fleet, name, second_target)
        week1 = contents(browser, fleet, name, "ds/material/week1.ipynb").json()["content"]
        assert week1["cells"][-1]["source"] == "print('my own work')"
        assert contents(browser, fleet, name, "ds/material/week2.ipynb").status_code == 200
        readme = contents(browser, fleet, name, "ds/material/README.md").json()["content"]
        assert readme == "Data Science, weeks 1-2\n"


def test_a_git_link_from_the_lms_and_a_git_pull_link_through_the_front_door(
    fleet: RunningFleet, lms: PeerLMS, links: dict[str, str], git_root: tuple[str, CourseRepository]
) -> None:
    repo, _ = git_root
    with httpx.Client(timeout=READY_TIMEOUT) as browser:
        name, target = follow_launch(
            fleet, browser, lms.launch_link(browser, sub="s-ana", context_id=CONTEXT, link_id=links["git"])
        )
        assert parse_qs(urlparse(target).query)["targetpath"] == ["ds-material"]
        pull(browser, fleet, name, target)
        assert contents(browser, fleet, name, "ds-material/week1.ipynb").status_code == 200
        # the classic nbgitpuller link, through the front door: /hubs/<hub>/hub/user-redirect/git-pull?…
        query = urlencode({"repo": repo, "branch": "main", "targetpath": "shared-copy", "urlpath": "lab"})
        landed = browser.get(f"{fleet.hub_url(H)}hub/user-redirect/git-pull?{query}", follow_redirects=True)
        assert landed.status_code == 200 and landed.url.path == f"/hubs/{H}/user/{name}/git-pull", landed.url
        pull(browser, fleet, name, f"{landed.url.path}?{landed.url.query.decode()}")
        assert contents(browser, fleet, name, "shared-copy/README.md").status_code == 200


# --------------------------------------------------------------------------------------------- refusals


def test_a_student_cannot_start_deep_linking(fleet: RunningFleet, lms: PeerLMS) -> None:
    with httpx.Client(timeout=READY_TIMEOUT) as browser:
        refused = lms.deep_link(browser, sub="s-ben", context_id=CONTEXT)
    assert refused.status_code == 403, refused.text[:300]
    assert "instructors and TAs" in refused.text and 'name="session"' not in refused.text
    with httpx.Client(timeout=READY_TIMEOUT) as browser:
        html_only = lms.deep_link(browser, sub="s-prof", context_id=CONTEXT, accept_types=["html"])
    assert html_only.status_code == 400 and "accepts only html" in html_only.text


def test_forged_and_replayed_deep_linking_requests_are_refused(fleet: RunningFleet, lms: PeerLMS) -> None:
    other_key = RSAKey.generate_key(2048, private=True)
    kid = lms.jwks()["keys"][0]["kid"]
    captured: list[dict] = []

    def forge(claims: dict) -> dict:
        captured.append(claims)
        return claims

    with httpx.Client(timeout=READY_TIMEOUT) as browser:
        assert lms.deep_link(browser, sub="s-prof", context_id=CONTEXT, tamper=forge).status_code == 200
        # the same id_token again, with a fresh login (state): its nonce was used
        urls = fleet.extra["urls"]
        for key in (None, other_key):
            login = browser.get(
                urls.login,
                params={
                    "iss": lms.issuer,
                    "login_hint": "s-prof",
                    "target_link_uri": urls.launch,
                    "client_id": lms.client_id,
                },
            )
            state = parse_qs(urlparse(login.headers["location"]).query)["state"][0]
            nonce = parse_qs(urlparse(login.headers["location"]).query)["nonce"][0]
            claims = captured[0] if key is None else captured[0] | {"nonce": nonce}
            token = lms.sign(claims, key=key, kid=kid)
            refused = browser.post(urls.launch, data={"id_token": token, "state": state})
            assert refused.status_code == 401, refused.text[:300]
            assert ("nonce" if key is None else "signature") in refused.text


def test_picker_choices_and_sessions_are_checked(fleet: RunningFleet, lms: PeerLMS) -> None:
    with httpx.Client(timeout=READY_TIMEOUT) as browser:
        page = lms.deep_link(browser, sub="s-tara", context_id=CONTEXT, accept_multiple=False).text
        assert 'type="radio"' in page
        for fields, words in (
            ([("item", "notebook:../../../etc/passwd")], "not a notebook of the course folder"),
            ([("item", "assignment:nope")], "not an assignment released"),
            ([("item", "notebook:week3/intro.ipynb"), ("item", "assignment:hw1")], "one item"),
            ([("item", "git"), ("repo", "file:///etc")], "git content"),
            ([], "choose something"),
        ):
            refused = pick(fleet, browser, page, fields)
            assert refused.status_code == 400 and words in refused.text, (fields, refused.text[:300])
        chosen = pick(fleet, browser, page, [("item", "notebook:week3/intro.ipynb")])
        assert chosen.status_code == 200
        replayed = pick(fleet, browser, page, [("item", "notebook:week3/intro.ipynb")])
        assert replayed.status_code == 400 and "already used" in replayed.text
        unknown = browser.post(f"{fleet.hub_url(H)}hub/lti13/deep-linking", data={"session": "made-up"})
        assert unknown.status_code == 400


def test_forged_and_replayed_deep_linking_responses_are_refused_by_the_lms(fleet: RunningFleet, lms: PeerLMS) -> None:
    tool_key = ToolKey.load_or_create(fleet.state_dir / "hubs" / H / "lti-tool-key.pem")
    with httpx.Client(timeout=READY_TIMEOUT) as browser:
        page = lms.deep_link(browser, sub="s-prof", context_id=CONTEXT, data="abc").text
        answer = pick(fleet, browser, page, [("item", "assignment:hw1")]).text
        start = answer.index('name="JWT" value="') + len('name="JWT" value="')
        token = answer[start : answer.index('"', start)]
        action = answer[answer.index(f"{lms.url}/deep_link_return/") :].split('"', 1)[0]
        claims = jwt.decode(token, tool_key.private).claims

        def post(signed: str) -> httpx.Response:
            return browser.post(action, data={"JWT": signed})

        other = RSAKey.generate_key(2048, private=True)
        forged = jwt.encode({"alg": "RS256", "kid": tool_key.kid}, claims, other)
        assert post(forged).status_code == 401
        wrong_data = jwt.encode(
            {"alg": "RS256", "kid": tool_key.kid}, claims | {f"{DL_CLAIM}data": "xyz"}, tool_key.private
        )
        assert post(wrong_data).status_code == 400
        assert post(token).status_code == 200  # the real one
        assert post(token).status_code in (400, 401)  # replayed


def test_accept_types_link_only_gives_a_front_door_git_pull_link(
    fleet: RunningFleet, lms: PeerLMS, git_root: tuple[str, CourseRepository]
) -> None:
    with httpx.Client(timeout=READY_TIMEOUT) as browser:
        page = lms.deep_link(browser, sub="s-prof", context_id=CONTEXT, accept_types=["link"]).text
        assert "assignment:hw1" not in page and 'value="git"' in page
        answer = pick(fleet, browser, page, [("item", "git"), ("repo", git_root[0]), ("path", "week1.ipynb")])
        assert lms.post_deep_link_return(browser, answer.text).status_code == 200
    (item,) = lms.deep_link_returns[-1]["items"]
    assert item["type"] == "link"
    assert item["url"].startswith(f"{fleet.hub_url(H)}hub/user-redirect/git-pull?repo=")


def test_links_with_bad_custom_parameters_and_foreign_assignments_are_refused(
    fleet: RunningFleet, lms: PeerLMS
) -> None:
    with httpx.Client(timeout=READY_TIMEOUT) as browser:
        for custom, words in (
            ({"notebook": "../../etc/shadow"}, "must stay inside"),
            ({"git_repo": "ext::sh"}, "not a git repository URL"),
            ({"git_repo": "https://h/r.git --upload-pack=touch"}, "without spaces"),
            ({"assignment": "hw1", "notebook": "a.ipynb"}, "more than one destination"),
        ):
            refused = lms.launch(browser, sub="s-ana", context_id=CONTEXT, custom=custom)
            assert refused.status_code == 400 and words in refused.text, (custom, refused.text[:300])
        assert lms.launch(browser, sub="s-ana", context_id=CONTEXT).status_code == 302  # logged in
        missing = browser.get(f"{fleet.hub_url(H)}hub/lti13/assignments/ds/nope")
        assert missing.status_code == 404
    with httpx.Client(timeout=60) as olga:  # a student of another course, with a password login
        olga.get(f"{fleet.hub_url(H)}hub/login")
        xsrf = next(c.value for c in olga.cookies.jar if c.name == "_xsrf")
        login = {"_xsrf": xsrf, "username": "olga", "password": PASSWORD}
        assert olga.post(f"{fleet.hub_url(H)}hub/login", data=login).status_code == 302
        refused = olga.get(f"{fleet.hub_url(H)}hub/lti13/assignments/ds/hw1", follow_redirects=False)
        assert refused.status_code == 403, refused.text[:300]


def test_tool_configuration_offers_deep_linking(fleet: RunningFleet) -> None:
    urls = fleet.extra["urls"]
    canvas = httpx.get(urls.canvas).json()
    placements = {p["placement"]: p for p in canvas["extensions"][0]["settings"]["placements"]}
    assert placements["link_selection"]["message_type"] == "LtiDeepLinkingRequest"
    assert placements["assignment_selection"]["message_type"] == "LtiDeepLinkingRequest"
    config = httpx.get(urls.config).json()
    assert config["moodle"]["supports_deep_linking"] and config["moodle"]["content_selection_url"] == urls.launch


# --------------------------------------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser() -> Iterator[tuple[playwright_api.Browser, Path]]:
    """Chromium, and the folder for screenshots (the guides' pictures in docs/img come from there)."""
    with chromium("deeplink") as running:
        yield running


def settle(page: playwright_api.Page, heading: str) -> None:
    """JupyterLab shows the notebook (its heading rendered), its kernel is idle, the news question is answered."""
    page.get_by_role("heading", name=heading).wait_for(timeout=READY_TIMEOUT * 1000)
    with contextlib.suppress(playwright_api.Error):
        page.get_by_role("button", name="No", exact=True).click(timeout=5000)
    with contextlib.suppress(playwright_api.Error):
        page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(timeout=30000)


def test_in_a_browser_the_instructor_picks_and_students_land(
    browser: tuple[playwright_api.Browser, Path], fleet: RunningFleet, lms: PeerLMS, links: dict[str, str]
) -> None:
    """The LMS's pages drive the browser (auto-submitted forms, as in Canvas): the picker, the response going back
    to the LMS, a student's notebook open in JupyterLab, the course's git content pulled by nbgitpuller."""
    chromium, artifacts = browser
    instructor = chromium.new_context(viewport={"width": 1100, "height": 760}).new_page()
    request = lms.deep_link_request(CONTEXT, data="from-the-browser")
    instructor.goto(lms.login_url(sub="s-prof", context_id=CONTEXT, deep_link=request))
    instructor.wait_for_selector("#deep-linking")
    instructor.check('input[value="assignment:hw1"]')
    instructor.check('input[value="notebook:week3/intro.ipynb"]')
    instructor.screenshot(path=artifacts / "lti-deep-linking-picker.png", full_page=True)
    instructor.click("#add")
    instructor.wait_for_url(f"{lms.url}/deep_link_return/**")
    assert "2 item(s) added" in instructor.content()
    assert lms.deep_link_returns[-1]["data"] == "from-the-browser"
    instructor.context.close()

    student = chromium.new_context(viewport={"width": 1280, "height": 720}).new_page()
    student.goto(lms.link_login_url(sub="s-ana", context_id=CONTEXT, link_id=links["notebook"]))
    student.wait_for_url("**/user/ana/lab/tree/courses/ds/week3/intro.ipynb", timeout=READY_TIMEOUT * 1000)
    settle(student, "Week 3, in the course folder")
    student.screenshot(path=artifacts / "lti-notebook-landing.png")
    student.context.close()

    puller = chromium.new_context(viewport={"width": 1280, "height": 720}).new_page()
    puller.goto(lms.login_url(sub="s-ben", context_id=CONTEXT))
    puller.wait_for_url("**/user/ben/lab/tree/ds/material/week1.ipynb", timeout=READY_TIMEOUT * 1000)
    settle(puller, "Week 1")
    puller.screenshot(path=artifacts / "git-content-landing.png")
    puller.context.close()
