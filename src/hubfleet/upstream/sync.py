"""`hubfleet contributions sync`: the engineers' work on GitHub into the ledger, incrementally.

What is read, and how (request counts for E engineers, R key repositories, one year of history):

- **Has anything changed?** `GET /users/{login}/events/public?per_page=1`, conditional on the ETag of the last
  sync: GitHub answers 304 (free of rate limit) while the engineer has no new public activity, and the engineer's
  GraphQL queries are skipped. The ETag is stored only once the engineer's sync completed, so a stopped sync never
  skips work it did not do.
- **Pull requests, issues and reviews they opened**: one GraphQL query per page of the engineer's
  `contributionsCollection` (its three connections paged together, 100 a page; windows of at most a year, as
  GitHub allows), from the end of the last sync.
- **Comments on issues and pull requests**: the engineer's `issueComments`, newest first, 100 a page, until the end
  of the last sync.
- **Merges of pull requests opened earlier**: the ledger's still-open pull requests, 100 per GraphQL `nodes` query.
- **Releases** of the key repositories: 50 repositories per GraphQL query (aliases); whole organisations are
  listed with `GET /orgs/{org}/repos` (paged, conditional).

Every page is written to the fleet database before the next is asked for, with the cursor to resume from. When
GitHub asks for a wait longer than `max_wait`, or keeps failing, the sync stops; the next run resumes there.
Without the GraphQL batching, the same year would take a REST request per pull request for its reviews alone.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.spec.organisation import Organisation
from hubfleet.upstream.github import GitHubClient, GitHubError, NotFound
from hubfleet.upstream.tables import COMMENT, ISSUE, PULL_REQUEST, RELEASE, REVIEW, Item, SyncState

log = logging.getLogger(__name__)

PAGE = 100
RELEASE_REPOS_PER_QUERY = 50
RELEASES_PER_REPO = 20
YEAR = dt.timedelta(days=365)
"""GitHub's longest `contributionsCollection` span."""

CONNECTIONS = {
    "prs": (
        "pullRequestContributions",
        "pullRequest { id number title url createdAt mergedAt state additions deletions repository { nameWithOwner } }",
    ),
    "issues": ("issueContributions", "issue { id number title url createdAt state repository { nameWithOwner } }"),
    "reviews": (
        "pullRequestReviewContributions",
        "pullRequestReview { id url createdAt state comments { totalCount } pullRequest { number title } "
        "repository { nameWithOwner } }",
    ),
}

COMMENTS_QUERY = """
query($login: String!, $after: String) {
  user(login: $login) {
    issueComments(first: 100, after: $after, orderBy: {field: UPDATED_AT, direction: DESC}) {
      pageInfo { hasNextPage endCursor }
      nodes { id url createdAt updatedAt repository { nameWithOwner } issue { number title } }
    }
  }
}
"""

OPEN_PRS_QUERY = """
query($ids: [ID!]!) {
  nodes(ids: $ids) { ... on PullRequest { id state mergedAt title additions deletions } }
}
"""

RELEASE_FIELDS = (
    "pageInfo { hasNextPage endCursor } nodes { id name tagName url createdAt publishedAt author { login } }"
)


def contributions_query(parts: Iterable[str]) -> str:
    """The `contributionsCollection` query for the connections in `parts` (those not yet fully paged)."""
    parts = list(parts)
    cursors = "".join(f", ${part}: String" for part in parts)
    blocks = "\n".join(
        f"      {CONNECTIONS[part][0]}(first: {PAGE}, after: ${part}) {{ pageInfo {{ hasNextPage endCursor }} "
        f"nodes {{ {CONNECTIONS[part][1]} }} }}"
        for part in parts
    )
    return (
        f"query($login: String!, $from: DateTime!, $to: DateTime!{cursors}) {{\n"
        f"  user(login: $login) {{\n    contributionsCollection(from: $from, to: $to) {{\n{blocks}\n    }}\n  }}\n}}"
    )


def releases_query(count: int) -> str:
    """Releases of `count` repositories in one query (aliases r0…), newest first."""
    names = "".join(f", $o{i}: String!, $n{i}: String!, $a{i}: String" for i in range(count))
    blocks = "\n".join(
        f"  r{i}: repository(owner: $o{i}, name: $n{i}) {{ nameWithOwner releases(first: {RELEASES_PER_REPO}, "
        f"after: $a{i}, orderBy: {{field: CREATED_AT, direction: DESC}}) {{ {RELEASE_FIELDS} }} }}"
        for i in range(count)
    )
    return f"query({names[2:]}) {{\n{blocks}\n}}"


@dataclass
class SyncResult:
    """What one sync did."""

    requests: int = 0
    new_items: int = 0
    updated_items: int = 0
    engineers_synced: list[str] = field(default_factory=list)
    engineers_unchanged: list[str] = field(default_factory=list)  # no new public activity (HTTP 304)
    warnings: list[str] = field(default_factory=list)
    waited_seconds: float = 0.0
    seconds: float = 0.0
    stopped: str | None = None  # why the sync stopped before the end (it resumes there next time)

    @property
    def complete(self) -> bool:
        return self.stopped is None


def _time(text: str | None) -> dt.datetime | None:
    """GitHub's ISO time as a naive UTC datetime."""
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC).replace(tzinfo=None)


def _iso(moment: dt.datetime) -> str:
    return moment.replace(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")


def _repo(node: dict[str, Any]) -> str:
    return node["repository"]["nameWithOwner"].lower()


class _Ledger:
    """Writes to the ledger, one transaction per page."""

    def __init__(self, sessions: sessionmaker[Session], result: SyncResult):
        self.sessions = sessions
        self.result = result

    def state(self, stream: str) -> SyncState | None:
        with self.sessions() as session:
            return session.get(SyncState, stream)

    def save(self, kind: str, rows: list[dict[str, Any]], stream: str | None = None, **state: Any) -> tuple[int, int]:
        """Upsert items of one kind (by GitHub ID) and update a stream's state, in one transaction."""
        new = updated = 0
        with self.sessions.begin() as session:
            if rows:
                ids = [row["github_id"] for row in rows]
                existing = {
                    item.github_id: item
                    for item in session.execute(
                        select(Item).where(Item.kind == kind, Item.github_id.in_(ids))
                    ).scalars()
                }
                for row in rows:
                    item = existing.get(row["github_id"])
                    if item is None:
                        item = Item(kind=kind, **row)
                        session.add(item)
                        existing[row["github_id"]] = item
                        new += 1
                    else:
                        for key, value in row.items():
                            setattr(item, key, value)
                        updated += 1
            if stream is not None:
                self._set_state(session, stream, **state)
        self.result.new_items += new
        self.result.updated_items += updated
        return new, updated

    def set_state(self, stream: str, **values: Any) -> None:
        with self.sessions.begin() as session:
            self._set_state(session, stream, **values)

    @staticmethod
    def _set_state(session: Session, stream: str, **values: Any) -> None:
        row = session.get(SyncState, stream) or SyncState(stream=stream)
        for key, value in values.items():
            setattr(row, key, json.dumps(value) if key == "progress" and value is not None else value)
        row.updated = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        session.add(row)


def _item(login: str, node: dict[str, Any], about: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every item records; `about` is the pull request or issue a review or comment is on (else the node)."""
    about = node if about is None else about
    return {
        "github_id": node["id"],
        "login": login,
        "repo": _repo(node),
        "number": about["number"],
        "title": about["title"][:500],
        "url": node["url"],
        "created_at": _time(node["createdAt"]),
    }


def _pull_request(login: str, node: dict[str, Any]) -> dict[str, Any]:
    return _item(login, node) | {
        "merged_at": _time(node.get("mergedAt")),
        "state": node["state"],
        "additions": node.get("additions") or 0,
        "deletions": node.get("deletions") or 0,
    }


def _issue(login: str, node: dict[str, Any]) -> dict[str, Any]:
    return _item(login, node) | {"state": node["state"]}


def _review(login: str, node: dict[str, Any]) -> dict[str, Any]:
    return _item(login, node, node["pullRequest"]) | {
        "state": node["state"],
        "comments": node["comments"]["totalCount"],
    }


def _comment(login: str, node: dict[str, Any]) -> dict[str, Any]:
    return _item(login, node, node["issue"])


PARSERS: dict[str, tuple[str, str, Callable[[str, dict[str, Any]], dict[str, Any]]]] = {
    "prs": (PULL_REQUEST, "pullRequest", _pull_request),
    "issues": (ISSUE, "issue", _issue),
    "reviews": (REVIEW, "pullRequestReview", _review),
}


class Syncer:
    """One sync run: every engineer, the still-open pull requests, the key repositories' releases."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        organisation: Organisation,
        client: GitHubClient,
        *,
        now: dt.datetime | None = None,
        on_step: Callable[[str], None] | None = None,
    ):
        self.organisation = organisation
        self.client = client
        self.now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None, microsecond=0)
        self.history_start = self.now - dt.timedelta(seconds=organisation.github.history)
        self.result = SyncResult()
        self.ledger = _Ledger(sessions, self.result)
        self.sessions = sessions
        self._on_step = on_step

    def _step(self, text: str) -> None:
        log.info("contributions sync: %s", text)
        if self._on_step is not None:
            self._on_step(text)

    def run(self) -> SyncResult:
        """Sync everything; a stop (rate limit longer than max_wait, GitHub failing) ends the run, keeping its work."""
        started = time.perf_counter()
        try:
            for engineer in self.organisation.engineers:
                self._engineer(engineer.github.lower())
            self._open_pull_requests()
            self._releases()
        except GitHubError as exc:
            self.result.stopped = str(exc)
        self.result.requests = self.client.requests
        self.result.waited_seconds = self.client.waited
        self.result.seconds = time.perf_counter() - started
        return self.result

    # Engineers

    def _engineer(self, login: str) -> None:
        streams = (f"contributions:{login}", f"comments:{login}")
        states = [self.ledger.state(stream) for stream in streams]
        settled = all(s is not None and s.synced_until is not None and s.progress is None for s in states)
        events = self.ledger.state(f"events:{login}")
        try:
            page = self.client.get(
                f"/users/{login}/events/public",
                {"per_page": 1},
                events.etag if events is not None and settled else None,
            )
        except NotFound:
            self.result.warnings.append(f"GitHub has no user {login!r}: check the engineer's `github` login")
            return
        if page.status == 304:
            self._step(f"{login}: no new public activity")
            self.result.engineers_unchanged.append(login)
            return
        try:
            self._step(f"{login}: pull requests, issues and reviews")
            self._contributions(login)
            self._step(f"{login}: comments")
            self._comments(login)
        except NotFound as exc:
            self.result.warnings.append(f"{login}: {exc}")
            return
        self.ledger.set_state(f"events:{login}", etag=page.etag)
        self.result.engineers_synced.append(login)

    def _since(self, state: SyncState | None) -> dt.datetime:
        if state is not None and state.synced_until is not None:
            return max(state.synced_until, self.history_start)
        return self.history_start

    def _contributions(self, login: str) -> None:
        stream = f"contributions:{login}"
        state = self.ledger.state(stream)
        progress = json.loads(state.progress) if state is not None and state.progress else None
        start = self._since(state)
        while start < self.now:
            if progress is not None and _time(progress["from"]) == start:
                cursors = progress["cursors"]  # an interrupted run of this window: go on from its pages
                end = _time(progress["to"]) or self.now
            else:
                cursors = dict.fromkeys(CONNECTIONS)
                end = min(start + YEAR, self.now)
            pending = [part for part in CONNECTIONS if cursors.get(part, "") != "done"]
            while pending:
                variables = {"login": login, "from": _iso(start), "to": _iso(end)}
                variables.update({part: cursors[part] for part in pending})
                data = self.client.graphql(contributions_query(pending), variables)
                if data.get("user") is None:
                    raise NotFound(f"GitHub has no user {login!r}")
                collection = data["user"]["contributionsCollection"]
                for part in pending:
                    connection = collection[CONNECTIONS[part][0]]
                    kind, key, parse = PARSERS[part]
                    rows = [parse(login, node[key]) for node in connection["nodes"] if node and node.get(key)]
                    info = connection["pageInfo"]
                    cursors[part] = info["endCursor"] if info["hasNextPage"] else "done"
                    window = {"from": _iso(start), "to": _iso(end), "cursors": cursors}
                    self.ledger.save(kind, rows, stream, progress=window)
                pending = [part for part in CONNECTIONS if cursors[part] != "done"]
            self.ledger.set_state(stream, synced_until=end, progress=None)
            progress, start = None, end

    def _comments(self, login: str) -> None:
        stream = f"comments:{login}"
        state = self.ledger.state(stream)
        progress = json.loads(state.progress) if state is not None and state.progress else None
        since = self._since(state)
        until = (_time(progress["until"]) if progress else None) or self.now
        cursor = progress["cursor"] if progress else None
        while True:
            data = self.client.graphql(COMMENTS_QUERY, {"login": login, "after": cursor})
            if data.get("user") is None:
                raise NotFound(f"GitHub has no user {login!r}")
            connection = data["user"]["issueComments"]
            nodes = [node for node in connection["nodes"] if node]
            fresh = [node for node in nodes if (_time(node["updatedAt"]) or self.now) >= since]
            rows = [_comment(login, node) for node in fresh if (_time(node["createdAt"]) or self.now) >= since]
            info = connection["pageInfo"]
            more = info["hasNextPage"] and len(fresh) == len(nodes)
            cursor = info["endCursor"]
            if not more:
                self.ledger.save(COMMENT, rows, stream, synced_until=until, progress=None)
                return
            self.ledger.save(COMMENT, rows, stream, progress={"until": _iso(until), "cursor": cursor})

    # Merges of pull requests opened before this sync's window

    def _open_pull_requests(self) -> None:
        with self.sessions() as session:
            ids = list(
                session.execute(
                    select(Item.github_id).where(Item.kind == PULL_REQUEST, Item.state == "OPEN").order_by(Item.id)
                ).scalars()
            )
        if ids:
            self._step(f"{len(ids)} open pull requests: merged since?")
        for first in range(0, len(ids), PAGE):
            data = self.client.graphql(OPEN_PRS_QUERY, {"ids": ids[first : first + PAGE]}, missing=[])
            changes = {node["id"]: node for node in data.get("nodes") or [] if node}
            with self.sessions.begin() as session:
                for item in session.execute(
                    select(Item).where(Item.kind == PULL_REQUEST, Item.github_id.in_(list(changes)))
                ).scalars():
                    node = changes[item.github_id]
                    if node["state"] != item.state:
                        item.state = node["state"]
                        item.merged_at = _time(node.get("mergedAt"))
                        item.additions = node.get("additions") or item.additions
                        item.deletions = node.get("deletions") or item.deletions
                        self.result.updated_items += 1

    # Releases of the key repositories

    def _key_repositories(self) -> list[str]:
        repos: list[str] = []
        for project in self.organisation.projects:
            repos += [repo.lower() for repo in project.repos]
            for org in project.orgs:
                repos += self._organisation_repositories(org.lower())
        return list(dict.fromkeys(repos))

    def _organisation_repositories(self, org: str) -> list[str]:
        stream = f"org-repos:{org}"
        state = self.ledger.state(stream)
        known = json.loads(state.progress) if state is not None and state.progress else None
        self._step(f"repositories of {org}")
        try:
            page = self.client.get(
                f"/orgs/{org}/repos",
                {"per_page": PAGE, "type": "public", "sort": "full_name"},
                state.etag if state is not None and known is not None else None,
            )
        except NotFound:
            self.result.warnings.append(f"GitHub has no organisation {org!r}: check the key projects' `orgs`")
            return []
        if page.status == 304 and known is not None:
            return known
        etag, repos = page.etag, []
        while True:
            repos += [repo["full_name"].lower() for repo in page.data]
            if page.next_url is None:
                break
            page = self.client.get(page.next_url)
        self.ledger.set_state(stream, etag=etag, progress=repos)
        return repos

    def _releases(self) -> None:
        engineers = {engineer.github.lower() for engineer in self.organisation.engineers}
        repos = self._key_repositories()
        state = self.ledger.state("releases")
        since = self._since(state)
        if repos:
            self._step(f"releases of {len(repos)} key repositories")
        for first in range(0, len(repos), RELEASE_REPOS_PER_QUERY):
            batch = [(repo, None) for repo in repos[first : first + RELEASE_REPOS_PER_QUERY]]
            while batch:
                variables: dict[str, Any] = {}
                for i, (repo, cursor) in enumerate(batch):
                    variables[f"o{i}"], variables[f"n{i}"] = repo.split("/", 1)
                    variables[f"a{i}"] = cursor
                missing: list[str] = []
                data = self.client.graphql(releases_query(len(batch)), variables, missing=missing)
                self.result.warnings += [f"releases: {message}" for message in missing]
                rows, more = [], []
                for i, (repo, _) in enumerate(batch):
                    node = data.get(f"r{i}")
                    if node is None:
                        continue
                    releases = node["releases"]
                    recent = [r for r in releases["nodes"] if r and (_time(r["createdAt"]) or self.now) >= since]
                    rows += [
                        {
                            "github_id": r["id"],
                            "login": r["author"]["login"].lower(),
                            "repo": repo,
                            "title": (r["name"] or r["tagName"])[:500],
                            "url": r["url"],
                            "created_at": _time(r["publishedAt"] or r["createdAt"]),
                            "state": "published" if r["publishedAt"] else "draft",
                        }
                        for r in recent
                        if r.get("author") and r["author"]["login"].lower() in engineers
                    ]
                    if releases["pageInfo"]["hasNextPage"] and len(recent) == len(releases["nodes"]):
                        more.append((repo, releases["pageInfo"]["endCursor"]))
                self.ledger.save(RELEASE, rows)
                batch = more
        self.ledger.set_state("releases", synced_until=self.now, progress=None)


def sync(
    sessions: sessionmaker[Session],
    organisation: Organisation,
    client: GitHubClient,
    *,
    now: dt.datetime | None = None,
    on_step: Callable[[str], None] | None = None,
) -> SyncResult:
    """Bring the ledger up to date with GitHub (see the module's docstring for what is read and how)."""
    return Syncer(sessions, organisation, client, now=now, on_step=on_step).run()
