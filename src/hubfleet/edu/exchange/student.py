"""hubfleet-assignment: a student's fetch and submit, from a terminal or a notebook inside their server.

Standard library only: `make setup` installs this file as a command of the single-user environment, where hubfleet
itself is not installed. It finds the hub's exchange from `$HUBFLEET_EXCHANGE_URL` (set by the hub for every server)
and authenticates with the server's own token `$JUPYTERHUB_API_TOKEN`.

    hubfleet-assignment list COURSE
    hubfleet-assignment fetch COURSE NAME            # into ~/COURSE/NAME (never over an existing folder)
    hubfleet-assignment submit COURSE NAME [FOLDER]  # FOLDER defaults to ~/COURSE/NAME; shows instant feedback
    hubfleet-assignment check COURSE NAME            # the instant feedback on your latest submission
    hubfleet-assignment feedback COURSE NAME         # saves ~/COURSE/NAME/feedback.html
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

URL_ENV = "HUBFLEET_EXCHANGE_URL"
SKIPPED = {"__pycache__", "feedback.html"}
CHECK_WAIT = 60.0
"""How long `submit` waits for instant feedback before saying where to find it later."""


class Failure(Exception):
    """What to tell the student before exiting with status 1."""


def _service_url() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        raise Failure(f"${URL_ENV} is not set: this command works inside a server of a hub with courses")
    return url.rstrip("/") + "/"


def _request(method: str, path: str, body: Any = None) -> bytes:
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if not token:
        raise Failure("$JUPYTERHUB_API_TOKEN is not set: run this inside your server on the hub")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(_service_url() + path, data=data, method=method)
    request.add_header("Authorization", f"token {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("error")
        except (ValueError, AttributeError):
            message = None
        raise Failure(f"{error.code}: {message or error.reason}") from None
    except urllib.error.URLError as error:
        raise Failure(f"cannot reach the exchange: {error.reason}") from None


def _assignment_path(course: str, name: str) -> str:
    return f"api/courses/{urllib.parse.quote(course, safe='')}/assignments/{urllib.parse.quote(name, safe='')}"


def _default_folder(course: str, name: str) -> Path:
    return Path.home() / course / name


def list_assignments(course: str) -> None:
    document = json.loads(_request("GET", f"api/courses/{urllib.parse.quote(course, safe='')}/assignments"))
    for assignment in document["assignments"]:
        due = assignment["due"] or "no due date"
        print(f"{assignment['name']}\t{assignment['title']}\tdue {due}\t{assignment['max_score']:g} points")


def fetch(course: str, name: str, into: Path | None) -> Path:
    """Write the released files into a new folder (default ~/COURSE/NAME)."""
    target = into or _default_folder(course, name)
    if target.exists():
        raise Failure(f"{target} exists already: move it away to fetch again (your work is in it)")
    document = json.loads(_request("GET", f"{_assignment_path(course, name)}/release"))
    root = target.resolve()
    for path, text in document["files"].items():
        destination = (root / path).resolve()
        if root not in destination.parents:
            raise Failure(f"the exchange sent a file outside the folder: {path!r}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(base64.b64decode(text))
    print(f"fetched {course}/{name}: {len(document['files'])} file(s) in {target}")
    return target


def _files(folder: Path) -> dict[str, str]:
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") or part in SKIPPED for part in relative.parts):
            continue
        if path.is_file() and not path.is_symlink():
            files[relative.as_posix()] = base64.b64encode(path.read_bytes()).decode("ascii")
    return files


def submit(course: str, name: str, folder: Path | None) -> dict[str, Any]:
    """Upload the folder's files (hidden files, checkpoints and caches left out) as a new submission."""
    source = folder or _default_folder(course, name)
    if not source.is_dir():
        raise Failure(f"{source} is not a folder: fetch the assignment first, or name the folder to submit")
    files = _files(source)
    if not files:
        raise Failure(f"{source} has no files to submit")
    receipt = json.loads(_request("POST", f"{_assignment_path(course, name)}/submissions", {"files": files}))
    late = " (late)" if receipt["late"] else ""
    print(f"submitted {course}/{name}{late} at {receipt['submitted_at']}: {len(files)} file(s), id {receipt['id']}")
    if receipt.get("check"):
        show_check(_wait_for_check(course, name, receipt["id"]))
    return receipt


def _check(course: str, name: str, submission: int) -> dict[str, Any]:
    return json.loads(_request("GET", f"{_assignment_path(course, name)}/submissions/{submission}/check"))


def _wait_for_check(course: str, name: str, submission: int) -> dict[str, Any]:
    deadline = time.monotonic() + CHECK_WAIT
    check = _check(course, name, submission)
    while check["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        check = _check(course, name, submission)
    return check


def show_check(check: dict[str, Any]) -> None:
    """Print instant feedback: the visible tests' results (hidden tests are graded later, by the instructor)."""
    state = check["state"]
    if state in ("queued", "running"):
        print(f"instant feedback: still {state}; see it later with `hubfleet-assignment check`")
        return
    if state != "done":
        print(f"instant feedback: {state}" + (f" ({check['message']})" if check.get("message") else ""))
        return
    print(f"visible tests: {check['total']:g} / {check['max_total']:g} points (hidden tests are graded later)")
    for notebook, cells in sorted((check.get("results") or {}).items()):
        for cell in cells:
            detail = f": {cell['message'].splitlines()[0]}" if cell.get("message") else ""
            score = f"{cell['points'] or 0:g} / {cell['max_points']:g}"
            print(f"  {notebook} {cell['cell']}: {score} {cell['status']}{detail}")
    if check.get("message"):
        print(f"  ({check['message']})")


def check(course: str, name: str) -> dict[str, Any]:
    """Show the instant feedback on the latest submission."""
    submissions = json.loads(_request("GET", f"{_assignment_path(course, name)}/submissions"))["submissions"]
    if not submissions:
        raise Failure(f"you have not submitted {course}/{name} yet")
    result = _wait_for_check(course, name, submissions[-1]["id"])
    show_check(result)
    return result


def feedback(course: str, name: str) -> Path:
    page = _request("GET", f"{_assignment_path(course, name)}/feedback")
    target = _default_folder(course, name) / "feedback.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(page)
    print(f"feedback saved in {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hubfleet-assignment", description="Fetch and submit course assignments.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="assignments released in a course")
    listing.add_argument("course")
    for command, text in (
        ("fetch", "get an assignment's files"),
        ("submit", "hand in an assignment"),
        ("check", "instant feedback on your latest submission"),
    ):
        sub = commands.add_parser(command, help=text)
        sub.add_argument("course")
        sub.add_argument("name")
        if command == "submit":
            sub.add_argument("folder", nargs="?", type=Path, help="default: ~/COURSE/NAME")
        elif command == "fetch":
            sub.add_argument("--into", type=Path, help="folder to create (default: ~/COURSE/NAME)")
    result = commands.add_parser("feedback", help="save your feedback page")
    result.add_argument("course")
    result.add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            list_assignments(args.course)
        elif args.command == "fetch":
            fetch(args.course, args.name, args.into)
        elif args.command == "submit":
            submit(args.course, args.name, args.folder)
        elif args.command == "check":
            check(args.course, args.name)
        else:
            feedback(args.course, args.name)
    except Failure as failure:
        print(f"hubfleet-assignment: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
