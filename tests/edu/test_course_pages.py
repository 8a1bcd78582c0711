"""The course pages in a real browser (headless Debian Chromium through Playwright), on a real fleet: a hub with a
course whose roster comes from the real LMS peer (tests/lms/peer.py), its exchange service, students' real servers
running `hubfleet-assignment`, the sandboxed autograder.

The instructor logs in through the hub's own login form, syncs the roster from the LMS, uploads an assignment
folder (a .zip), previews the student version and releases it; two students fetch and submit in their servers; the
instructor collects, autogrades (live progress, per submission), grades a manually graded cell, regrades (the
manual score stays), releases feedback and sends the grades, which the peer LMS then holds. A TA grades but cannot
release or send grades; a student and an instructor of another course get 403.

One module-scoped fleet serves every test; the tests run in file order and build on each other. What LTI launches
record (the students' LMS ids, the course's AGS and NRPS URLs) is written with the functions the launch uses, as in
test_exchange.py: launches themselves are tested in test_lti.py. Screenshots go to tests/artifacts/course-pages/.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from playwright import sync_api as playwright_api

from hubfleet.edu.exchange.settings import SERVICE_NAME
from hubfleet.health.client import TokenLogin
from tests.browser import chromium
from tests.edu.sources import graded_cell, nbgrader, solution_cell, write_source
from tests.helpers import USER_ENV, RunningFleet, unique_hub, wait_until
from tests.lms.courses import LinkedCourse, lti_hub_yaml
from tests.lms.peer import PeerLMS

H = unique_hub("ip")
PASSWORD = "course-pages-password"
CONTEXT = "ctx-ds-pages"
STUDENTS = {"sa": "lms-sa", "sb": "lms-sb"}  # hub user → their id in the LMS
ASSIGNMENT = "hw1"
AREA = "course-pages"

pytestmark = pytest.mark.needs("root", "cgroups", "user_env", "chromium")


def hub_yaml(lms: PeerLMS) -> str:
    courses = f"""\
        - name: ds
          title: Data Science
          instructors: [prof]
          tas: [tina]
          roster: lms
          lms_context: {CONTEXT}
        - name: bio
          instructors: [olga]
          students: [so]
        """
    return lti_hub_yaml(H, PASSWORD, lms, courses)


COURSE = LinkedCourse(H, PASSWORD, "ds", "canvas", CONTEXT, STUDENTS, hub_yaml, nrps=True)


def source_zip(root: Path) -> Path:
    """hw1 as a .zip of its folder: a function to write (tests worth 2 points, one hidden) and an explanation graded
    by hand (2 points), due in a week."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("Write `square(x)`, then explain it."),
        solution_cell("square", "def square(x):\n    return x * x"),
        graded_cell("test_square", 2, "assert square(3) == 9", "assert square(-2) == 4", locked=True),
        nbformat.v4.new_markdown_cell(
            "=== BEGIN MARK SCHEME ===\nMultiplication.\n=== END MARK SCHEME ===\nYOUR ANSWER HERE",
            metadata=nbgrader(grade_id="explain", solution=True, grade=True, points=2),
        ),
    ]
    due = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).replace(microsecond=0).isoformat()
    path = root / "hw1.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hw1/assignment.yaml", f"name: {ASSIGNMENT}\ntitle: Squares\ndue: {due}\n")
        archive.writestr("hw1/squares.ipynb", nbformat.writes(notebook))
        archive.writestr("hw1/data.csv", "x\n3\n")
        archive.writestr("hw1/.ipynb_checkpoints/squares-checkpoint.ipynb", "{}")  # left out
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[tuple[playwright_api.Browser, Path]]:
    with chromium(AREA) as started:
        yield started


def log_in(
    browser: tuple[playwright_api.Browser, Path], fleet: RunningFleet, user: str, path: str, zone: str = "UTC"
) -> Any:
    """A fresh browser session of `user` (in time zone `zone`): open `path` of the course pages, log in through the
    hub's login form on the way (OAuth), and land on it."""
    context = browser[0].new_context(viewport={"width": 1280, "height": 800}, timezone_id=zone)
    page = context.new_page()
    page.goto(fleet.service_url(H, SERVICE_NAME) + path)
    try:
        page.wait_for_url(f"**/hubs/{H}/hub/login**", timeout=60_000)
    except playwright_api.TimeoutError:
        raise AssertionError(f"no login form: at {page.url}: {page.locator('body').inner_text()[:500]}") from None
    page.fill("#username_input", user)
    page.fill("#password_input", PASSWORD)
    page.click("#login_submit")
    page.wait_for_url(fleet.service_url(H, SERVICE_NAME) + path)
    return page


def shoot(browser: tuple[playwright_api.Browser, Path], page: Any, name: str) -> None:
    page.wait_for_load_state("load")  # frames (previews, graded notebooks) included
    page.screenshot(path=browser[1] / f"{name}.png", full_page=True)


CLI = f"{USER_ENV}/bin/hubfleet-assignment"

STUDENT_SESSION = """
import json, os, subprocess
home = os.path.expanduser("~")
path = os.path.join(home, "ds", "hw1", "squares.ipynb")
fetched = subprocess.run(["{cli}", "fetch", "ds", "hw1"], capture_output=True, text=True, cwd=home)
notebook = json.load(open(path))
for cell in notebook["cells"]:
    grade_id = cell["metadata"].get("nbgrader", {{}}).get("grade_id")
    if grade_id == "square":
        cell["source"] = "def square(x):\\n    return {answer}"
    if grade_id == "explain":
        cell["source"] = "It multiplies x by itself."
json.dump(notebook, open(path, "w"))
submitted = subprocess.run(["{cli}", "submit", "ds", "hw1"], capture_output=True, text=True, cwd=home)
print(json.dumps([r.returncode if i else r.stdout + r.stderr for r in (fetched, submitted) for i in (1, 0)]))
"""


def test_an_instructor_syncs_the_roster_and_releases_an_uploaded_assignment(
    browser: tuple[playwright_api.Browser, Path], fleet: RunningFleet, tmp_path: Path
) -> None:
    page = log_in(browser, fleet, "prof", "")
    card = page.locator('article[data-course="ds"]')
    assert card.get_attribute("data-role") == "instructor"
    card.locator("h2 a").click()
    page.locator("nav.tabs a", has_text="Roster").click()
    assert page.locator(".roster-source").inner_text() == "the LMS"
    page.click("#sync-now")
    assert "2 added" in page.locator(".flash").inner_text()
    for student in STUDENTS:
        row = page.locator(f'table.roster tr[data-user="{student}"]')
        assert row.get_attribute("data-role") == "student"
        assert row.locator(".source").inner_text() == "LMS" and row.locator(".server").inner_text() == "stopped"
    assert page.locator('table.roster tr[data-user="prof"] .source').inner_text() == "fleet file"
    assert page.locator(".sync .state").inner_text() == "ok"
    shoot(browser, page, "roster")

    page.locator("nav.tabs a", has_text="New assignment").click()
    page.set_input_files("#files", str(source_zip(tmp_path)))
    page.locator("#upload-form button").click()
    page.wait_for_url("**/courses/ds/drafts/**")
    assert page.locator('table.cells tr[data-cell="test_square"] td').nth(2).inner_text() == "automatically (tests)"
    assert page.locator('table.cells tr[data-cell="explain"] td').nth(2).inner_text() == "by hand"
    preview = page.frame_locator("iframe.preview")
    assert "NotImplementedError" in preview.locator("body").inner_text()  # the solution is out …
    assert "square(-2)" not in preview.locator("body").inner_text()  # … and so is the hidden test
    shoot(browser, page, "draft")
    page.click("#release")
    page.wait_for_url(f"**/courses/ds/assignments/{ASSIGNMENT}")
    assert "Released hw1 to the students of ds: 4 points" in page.locator(".flash").inner_text()
    page.context.close()


def test_students_fetch_and_submit_through_their_servers(fleet: RunningFleet) -> None:
    def session(student: str, answer: str) -> list:
        code = STUDENT_SESSION.format(cli=CLI, answer=answer)
        return json.loads(fleet.run_code(H, TokenLogin(student, fleet.token(H, student)), code))  # type: ignore[arg-type]

    # Both servers at once, in threads of their own (Playwright's event loop holds this one).
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(session, ["sa", "sb"], ["x * x", "x + x"]))
    for result in results:
        assert result[0] == 0 and result[2] == 0, result  # [status, output] of fetch, then of submit


def test_the_instructor_collects_and_autogrades_with_live_progress(
    browser: tuple[playwright_api.Browser, Path], fleet: RunningFleet
) -> None:
    page = log_in(browser, fleet, "prof", f"courses/ds/assignments/{ASSIGNMENT}")
    for student in STUDENTS:
        row = page.locator(f'table.students tr[data-student="{student}"]')
        assert row.locator(".fetched time").count() == 1 and row.locator("td").nth(2).inner_text() == "1"
    page.click("#collect")
    assert "Collected 2 submission(s) of hw1 (0 late)" in page.locator(".flash").inner_text()
    page.click("#autograde")
    page.wait_for_url(f"**/courses/ds/assignments/{ASSIGNMENT}")
    seen = []

    def finished() -> bool:
        state = page.locator("#grading .job-state").inner_text()
        if not seen or seen[-1] != state:
            seen.append(state)
            if state == "running":
                shoot(browser, page, "autograding")
        return state == "done"

    wait_until(finished, 180, "the autograding to finish on the page", every=0.05)
    assert seen[0] == "running", seen  # the page showed the run while it went on, and updated itself
    rows = page.locator("#grading tr[data-submission]")
    assert sorted(rows.nth(i).get_attribute("data-student") for i in range(rows.count())) == ["sa", "sb"]
    assert {rows.nth(i).locator(".sub-state").inner_text() for i in range(rows.count())} == {"graded"}
    score = page.locator('tr[data-student="sa"] .score a')
    wait_until(lambda: "/ 4" in score.inner_text(), 30, "the page to show the scores (it reloads when grading ends)")
    assert page.locator('tr[data-student="sa"] .score a').inner_text() == "2 / 4"  # the manual cell waits
    assert page.locator('tr[data-student="sb"] .score a').inner_text() == "0 / 4"
    shoot(browser, page, "assignment")
    page.context.close()


def test_a_manually_graded_cell_and_a_regrade(
    browser: tuple[playwright_api.Browser, Path], fleet: RunningFleet
) -> None:
    page = log_in(browser, fleet, "prof", f"courses/ds/assignments/{ASSIGNMENT}")
    page.locator('tr[data-student="sa"] .score a').click()
    cell = page.locator('section.cell[data-cell="explain"]')
    assert cell.get_attribute("data-graded") == "no"
    assert "It multiplies x by itself." in cell.locator("pre.answer").inner_text()  # the student's answer
    cell.locator('input[name="score"]').fill("1.5")
    cell.locator('input[name="comment"]').fill("Right, but say why it is positive.")
    cell.locator("button").click()
    assert "Saved explain: 1.5 / 2 for sa" in page.locator(".flash").inner_text()
    assert page.locator("#score").inner_text() == "3.5 / 4"
    shoot(browser, page, "submission")

    page.click("#regrade")
    # While it runs, the page says so and follows it; it reloads itself when the regrade is done.
    wait_until(lambda: page.locator("#regrading").count() == 0, 120, "the regrade to finish")
    page.wait_for_load_state()
    assert page.locator('section.cell[data-cell="explain"]').get_attribute("data-score") == "1.5"  # kept
    assert page.locator("#score").inner_text() == "3.5 / 4"
    graded = page.frame_locator("iframe.preview").locator("body").inner_text()
    assert "Right, but say why it is positive." in graded and "Score: 2 / 2" in graded
    page.context.close()


def test_feedback_released_and_grades_held_by_the_lms(
    browser: tuple[playwright_api.Browser, Path], fleet: RunningFleet, lms: PeerLMS
) -> None:
    page = log_in(browser, fleet, "prof", f"courses/ds/assignments/{ASSIGNMENT}")
    page.click("#release-feedback")
    wait_until(lambda: page.locator('#progress[data-feedback="done"]').count() == 1, 120, "the feedback pages")
    page.reload()
    assert page.locator('tr[data-student="sa"] .feedback').inner_text() == "made"
    feedback = httpx.get(
        f"{fleet.service_url(H, SERVICE_NAME)}api/courses/ds/assignments/{ASSIGNMENT}/feedback",
        headers={"Authorization": f"token {fleet.token(H, 'sa')}"},
        timeout=60,
    )
    assert feedback.status_code == 200 and "Right, but say why it is positive." in feedback.text

    page.locator("nav.tabs a", has_text="LMS").click()
    assignment = page.locator(f'section.lms-assignment[data-assignment="{ASSIGNMENT}"]')
    assert {row.get_attribute("data-state") for row in assignment.locator("tr[data-student]").all()} == {"not sent"}
    assignment.locator("button.send-grades").click()
    assert "2 sent, 0 waiting" in page.locator(".flash").inner_text()
    for student in STUDENTS:
        assert page.locator(f'tr[data-student="{student}"]').get_attribute("data-state") == "sent"
    assert "“Squares”, 4 points" in page.locator(".line-item").inner_text()
    shoot(browser, page, "lms")
    scores = {score["userId"]: score["scoreGiven"] for score in lms.scores(CONTEXT)}
    assert scores == {"lms-sa": 3.5, "lms-sb": 0}  # the peer LMS holds the totals, the manual score included

    page.locator("nav.tabs a", has_text="Gradebook").click()
    page.locator(f'th[data-column="{ASSIGNMENT}"] a').click()
    page.locator(f'th[data-column="{ASSIGNMENT}"] a').click()  # twice: highest first
    order = [row.get_attribute("data-student") for row in page.locator("table.gradebook tbody tr").all()]
    assert order == ["sa", "sb"]
    with page.expect_download() as download:
        page.click("#csv")
    text = Path(download.value.path()).read_text()
    assert list(csv.reader(io.StringIO(text)))[:3] == [
        ["student", ASSIGNMENT, "total", "max_total"],
        ["sa", "3.5", "3.5", "4"],
        ["sb", "0", "0", "4"],
    ]
    # The command line reads the same gradebook and outbox as the pages (the same functions).
    assert fleet.cli("assignment", "grades", H, "ds", "--csv").stdout == text
    status = fleet.cli("assignment", "passback", H, "ds", ASSIGNMENT, "--status").stdout
    assert re.search(r"\bsa\b.*\b3\.5\b.*\bsent\b", status) and re.search(r"\bsb\b.*\b0\b.*\bsent\b", status), status
    shoot(browser, page, "gradebook")
    page.context.close()


def _post_from_page(page: Any, path: str) -> int:
    """A form POST with the page's own XSRF token (what a crafted form would send): the answer's status (303: a
    redirect, which is what a form that did its work answers)."""
    return page.evaluate(
        """async (path) => {
            const body = new URLSearchParams({_xsrf: document.querySelector('meta[name="xsrf"]').content});
            const response = await fetch(path, {method: "POST", body, redirect: "manual"});
            return response.type === "opaqueredirect" ? 303 : response.status;
        }""",
        path,
    )


def test_a_ta_grades_but_cannot_release_or_send_grades(
    browser: tuple[playwright_api.Browser, Path], fleet: RunningFleet
) -> None:
    page = log_in(browser, fleet, "tina", f"courses/ds/assignments/{ASSIGNMENT}")
    assert page.locator("#collect").count() == 1 and page.locator("#autograde").count() == 1
    assert page.locator("#send-grades").count() == 0 and page.locator("#release-feedback").count() == 0
    assert page.locator("nav.tabs a", has_text="New assignment").count() == 0
    base = f"/hubs/{H}/services/{SERVICE_NAME}/courses/ds"
    assert _post_from_page(page, f"{base}/assignments/{ASSIGNMENT}/passback") == 403
    assert _post_from_page(page, f"{base}/assignments/{ASSIGNMENT}/feedback") == 403
    assert _post_from_page(page, f"{base}/assignments/{ASSIGNMENT}/collect") == 303  # TAs collect
    refused = page.goto(fleet.service_url(H, SERVICE_NAME) + "courses/ds/new")
    assert refused is not None and refused.status == 403
    assert "only instructors of ds may release assignments" in page.locator(".explanation").inner_text()
    shoot(browser, page, "ta-refused")
    page.context.close()


def test_a_student_and_another_courses_instructor_get_403(
    browser: tuple[playwright_api.Browser, Path], fleet: RunningFleet
) -> None:
    student = log_in(browser, fleet, "sa", "")
    assert student.locator('article[data-course="ds"]').get_attribute("data-role") == "student"
    refused = student.goto(fleet.service_url(H, SERVICE_NAME) + "courses/ds/")
    assert refused is not None and refused.status == 403
    assert "for its instructors and TAs" in student.locator(".explanation").inner_text()
    refused = student.goto(fleet.service_url(H, SERVICE_NAME) + f"courses/ds/assignments/{ASSIGNMENT}/submissions/1")
    assert refused is not None and refused.status == 403
    student.context.close()

    other = log_in(browser, fleet, "olga", "courses/bio/")
    paths = ("courses/ds/", "courses/ds/gradebook.csv", "courses/ds/roster", f"courses/ds/assignments/{ASSIGNMENT}")
    for path in paths:
        refused = other.goto(fleet.service_url(H, SERVICE_NAME) + path)
        assert refused is not None and refused.status == 403, path
        assert "not on the staff of course ds" in other.locator(".explanation").inner_text()
    other.context.close()


def test_an_instructor_releases_from_the_course_folder_with_a_due_date_in_their_zone(
    browser: tuple[playwright_api.Browser, Path], fleet: RunningFleet
) -> None:
    """A folder the instructor put in ~/courses/ds (here: written as root, where the hub keeps it) is picked, and
    its due date is set in the browser's time zone (Berlin: UTC+1 in January)."""
    cells = [
        solution_cell("double", "def double(x):\n    return 2 * x"),
        graded_cell("t", 1, "assert double(2) == 4", locked=True),
    ]
    write_source(
        fleet.shared_root / H / "courses" / "ds" / "week2" / "hw2",
        "name: hw2\ntitle: Doubling\n",
        cells,
        "doubling.ipynb",
    )
    page = log_in(browser, fleet, "prof", "courses/ds/new", zone="Europe/Berlin")
    page.select_option("#folder", "week2/hw2")
    page.locator("#pick-form button").click()
    page.wait_for_url("**/courses/ds/drafts/**")
    assert "course folder week2/hw2" in page.locator("main p.meta").first.inner_text()
    assert page.locator("#no_due").is_checked()  # the folder gives no due date
    page.fill("#due", "2031-01-15T18:00")
    page.check("#instant")
    page.click("#release")
    page.wait_for_url("**/courses/ds/assignments/hw2")
    assert "due 2031-01-15 17:00 UTC" in page.locator(".flash").inner_text()
    assert "instant feedback" in page.locator("main p.meta").first.inner_text()
    listed = httpx.get(
        f"{fleet.service_url(H, SERVICE_NAME)}api/courses/ds/assignments",
        headers={"Authorization": f"token {fleet.token(H, 'sa')}"},
        timeout=60,
    ).json()["assignments"]
    assert {a["name"]: a["due"] for a in listed}["hw2"] == "2031-01-15T17:00:00+00:00"
    page.context.close()
