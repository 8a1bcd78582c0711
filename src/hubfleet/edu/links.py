"""Where a link lands: a notebook of the course folder, an assignment, or content pulled from git.

An LMS link names its destination in its custom parameters (made by the deep linking picker, or typed by an LMS
admin), a course may name its git `content` in the fleet file, and a plain git-pull link names a repository in its
query. Each becomes a typed `Destination`, checked once here (paths stay inside their folder, repositories are
public http(s)/git URLs, names are names), and then a path below the user's server or the hub:

- `notebook=week3/intro.ipynb` → `Notebook`: `lab/tree/courses/<course>/week3/intro.ipynb` (the course folder);
- `assignment=hw1` → `AssignmentLink`: the hub's assignment landing, which fetches it into `~/<course>/hw1` and
  opens it;
- `git_repo=URL`, `git_branch=main`, `git_path=week1.ipynb` → `GitContent`: nbgitpuller's `git-pull` page, which
  pulls the repository into the home (the user's edits kept) and opens the path.

nbgitpuller (in every user environment) pulls as the user, in the user's own server, keeping their edits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from hubfleet.edu.exchange.store import ExchangeError, check_name
from hubfleet.spec.edu import (
    COURSES_FOLDER,
    CourseContent,
    check_course,
    check_git_branch,
    check_git_url,
    check_relative_path,
)
from hubfleet.system.trees import walk

NOTEBOOK = "notebook"
ASSIGNMENT = "assignment"
GIT_REPO = "git_repo"
GIT_BRANCH = "git_branch"
GIT_PATH = "git_path"
CUSTOM_KEYS = (NOTEBOOK, ASSIGNMENT, GIT_REPO, GIT_BRANCH, GIT_PATH)
"""The custom parameters hubfleet reads from a link (others are left alone: an LMS may add its own)."""

CONTENT_FOLDER = "material"
"""A course's git content is pulled into `~/<course>/material`."""

GIT_PULL = "git-pull"
"""nbgitpuller's page in the user's server (it pulls, showing progress, then opens `urlpath`)."""

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class LinkError(ValueError):
    """A link whose destination cannot be used; the message says which parameter and why."""


@dataclass(frozen=True)
class Notebook:
    """A notebook (or folder) of the course's shared folder, by its path inside the folder."""

    path: str

    def custom(self) -> dict[str, str]:
        return {NOTEBOOK: self.path}


@dataclass(frozen=True)
class AssignmentLink:
    """A released assignment of the course: fetched into the student's home, then opened."""

    name: str

    def custom(self) -> dict[str, str]:
        return {ASSIGNMENT: self.name}


@dataclass(frozen=True)
class GitContent:
    """A public git repository pulled into the user's home (into `folder`, default: the repository's name),
    then `path` inside it opened."""

    repo: str
    branch: str | None = None
    path: str | None = None
    folder: str | None = None

    @property
    def target(self) -> str:
        """The folder of the home the repository is pulled into (nbgitpuller's `targetpath`)."""
        return self.folder or repo_name(self.repo)

    def custom(self) -> dict[str, str]:
        found = {GIT_REPO: self.repo, GIT_BRANCH: self.branch, GIT_PATH: self.path}
        return {key: value for key, value in found.items() if value}


Destination = Notebook | AssignmentLink | GitContent


def repo_name(repo: str) -> str:
    """The folder nbgitpuller names a clone of `repo` by default: the URL's last part (without `.git`)."""
    last = repo.rstrip("/").rsplit("/", 1)[-1]
    name = last.removesuffix(".git")
    return name if name and set(name) <= _NAME_CHARS and name not in (".", "..") else "repository"


def check_assignment_name(name: str) -> str:
    try:
        return check_name("assignment", name[:256])
    except ExchangeError as exc:
        raise LinkError(exc.message) from None


def git_content(repo: str, branch: str | None = None, path: str | None = None, folder: str | None = None) -> GitContent:
    """Checked git content (LinkError naming the bad part)."""
    try:
        check_git_url(repo)
        if branch:
            check_git_branch(branch)
        path = check_relative_path(path, "git path") if path else None
        folder = check_relative_path(folder, "target folder") if folder else None
    except ValueError as exc:
        raise LinkError(str(exc)) from None
    return GitContent(repo, branch or None, path, folder)


def destination_of(custom: Mapping[str, str]) -> Destination | None:
    """The destination a link's custom parameters name (None: none of hubfleet's); LinkError when they name one
    that cannot be used, or several at once."""
    named = [key for key in (NOTEBOOK, ASSIGNMENT, GIT_REPO) if custom.get(key)]
    if not named:
        if custom.get(GIT_BRANCH) or custom.get(GIT_PATH):
            raise LinkError(f"the link has {GIT_BRANCH} or {GIT_PATH} but no {GIT_REPO}")
        return None
    if len(named) > 1:
        raise LinkError(f"the link names more than one destination ({', '.join(named)}): keep one")
    if named[0] == NOTEBOOK:
        try:
            return Notebook(check_relative_path(custom[NOTEBOOK], "notebook"))
        except ValueError as exc:
            raise LinkError(str(exc)) from None
    if named[0] == ASSIGNMENT:
        return AssignmentLink(check_assignment_name(custom[ASSIGNMENT]))
    return git_content(custom[GIT_REPO], custom.get(GIT_BRANCH), custom.get(GIT_PATH))


def course_content(course: str, properties: Mapping[str, Any]) -> GitContent | None:
    """The course's git content (its group properties' `content`, from the fleet file), pulled into
    `~/<course>/material`; None when it has none (or what it has no longer passes the checks)."""
    spec = properties.get("content")
    if not isinstance(spec, dict):
        return None
    try:
        content = CourseContent.model_validate(spec)
    except ValueError:
        return None
    return GitContent(content.repo, content.branch, content.path, f"{course}/{CONTENT_FOLDER}")


def git_pull_path(content: GitContent) -> str:
    """The path, below a user's server, of nbgitpuller's page that pulls `content` and then opens it in
    JupyterLab."""
    opened = f"lab/tree/{content.target}" + (f"/{content.path}" if content.path else "")
    query = {"repo": content.repo, "targetpath": content.target, "urlpath": opened}
    if content.branch:
        query["branch"] = content.branch
    return f"{GIT_PULL}?{urlencode(query, quote_via=quote)}"


def notebook_path(course: str, notebook: Notebook) -> str:
    """The path, below a user's server, that opens `notebook` of `course`'s folder in JupyterLab."""
    check_course(course)
    return f"lab/tree/{COURSES_FOLDER}/{course}/{quote(notebook.path)}"


def course_folder_url(course: str | None) -> str:
    """The path, below a user's server, of the course's folder (`lab` without a course)."""
    return f"lab/tree/{COURSES_FOLDER}/{course}" if course else "lab"


MAX_LISTED = 500
"""Most notebooks the picker lists from one course folder."""

MAX_WALKED = 20_000
"""Most entries of a course folder looked at to find them."""


def course_notebooks(folder: Path, limit: int = MAX_LISTED) -> list[str]:
    """The notebooks in a course folder (relative paths, sorted; hidden files and checkpoints left out, links never
    followed), at most `limit`; [] when the folder does not exist yet."""
    found: list[str] = []
    if not folder.is_dir() or folder.is_symlink():
        return found

    def skip(path: str, error: OSError) -> None:
        return None

    for seen, entry in enumerate(walk(os.fspath(folder), skip)):
        if seen >= MAX_WALKED:
            break
        if any(part.startswith(".") for part in entry.path.split("/")):
            continue
        if entry.kind == "file" and entry.name.endswith(".ipynb"):
            found.append(entry.path)
            if len(found) >= limit:
                break
    return sorted(found)
