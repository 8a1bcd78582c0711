"""A stand-in for GitHub's API on 127.0.0.1: GitHub itself is outside our reach in tests and benchmarks (no network,
and its data changes), so this server answers as GitHub's REST and GraphQL APIs do, for the parts the contribution
ledger reads, over data the test makes (`World`).

- GraphQL (`POST /graphql`) runs on graphql-core against a subset of GitHub's schema (same type, field and argument
  names): a query naming a field GitHub does not have fails here too. Connections page with opaque cursors.
- REST: `GET /users/{login}/events/public` and `GET /orgs/{org}/repos`, paged with `page`/`per_page` and a `Link`
  header, with ETags and 304 answers to `If-None-Match`.
- Authentication: `Authorization: token …` or `Bearer …`; anything else is a 401 "Bad credentials".
- Faults, queued by the test: a secondary rate limit (403 with `Retry-After`), a primary one (403 with
  `x-ratelimit-remaining: 0` and `x-ratelimit-reset`), a server error (502). Every request is logged.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.server
import json
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import graphql

SCHEMA = """
scalar DateTime
scalar URI

type Query {
  user(login: String!): User
  repository(owner: String!, name: String!): Repository
  nodes(ids: [ID!]!): [Node]!
}

interface Node { id: ID! }

type PageInfo { hasNextPage: Boolean!, endCursor: String, hasPreviousPage: Boolean!, startCursor: String }

enum OrderDirection { ASC DESC }
enum IssueCommentOrderField { UPDATED_AT }
input IssueCommentOrder { field: IssueCommentOrderField!, direction: OrderDirection! }
enum ReleaseOrderField { CREATED_AT NAME }
input ReleaseOrder { field: ReleaseOrderField!, direction: OrderDirection! }
enum PullRequestState { OPEN CLOSED MERGED }
enum IssueState { OPEN CLOSED }
enum PullRequestReviewState { PENDING COMMENTED APPROVED CHANGES_REQUESTED DISMISSED }

type User implements Node {
  id: ID!
  login: String!
  contributionsCollection(from: DateTime, to: DateTime, organizationID: ID): ContributionsCollection!
  issueComments(first: Int, after: String, last: Int, before: String, orderBy: IssueCommentOrder):
    IssueCommentConnection!
}

type ContributionsCollection {
  startedAt: DateTime!
  endedAt: DateTime!
  pullRequestContributions(first: Int, after: String, last: Int, before: String):
    CreatedPullRequestContributionConnection!
  issueContributions(first: Int, after: String, last: Int, before: String):
    CreatedIssueContributionConnection!
  pullRequestReviewContributions(first: Int, after: String, last: Int, before: String):
    PullRequestReviewContributionConnection!
}

type CreatedPullRequestContributionConnection {
  totalCount: Int!, pageInfo: PageInfo!, nodes: [CreatedPullRequestContribution] }
type CreatedPullRequestContribution { occurredAt: DateTime!, pullRequest: PullRequest! }
type CreatedIssueContributionConnection {
  totalCount: Int!, pageInfo: PageInfo!, nodes: [CreatedIssueContribution] }
type CreatedIssueContribution { occurredAt: DateTime!, issue: Issue! }
type PullRequestReviewContributionConnection {
  totalCount: Int!, pageInfo: PageInfo!, nodes: [PullRequestReviewContribution] }
type PullRequestReviewContribution {
  occurredAt: DateTime!, pullRequestReview: PullRequestReview!, pullRequest: PullRequest!, repository: Repository!
}
type IssueCommentConnection { totalCount: Int!, pageInfo: PageInfo!, nodes: [IssueComment] }
type ReleaseConnection { totalCount: Int!, pageInfo: PageInfo!, nodes: [Release] }
type PullRequestReviewCommentConnection { totalCount: Int! }

type Repository implements Node {
  id: ID!
  name: String!
  nameWithOwner: String!
  url: URI!
  releases(first: Int, after: String, last: Int, before: String, orderBy: ReleaseOrder): ReleaseConnection!
}

type PullRequest implements Node {
  id: ID!
  number: Int!
  title: String!
  url: URI!
  createdAt: DateTime!
  mergedAt: DateTime
  state: PullRequestState!
  additions: Int!
  deletions: Int!
  author: User
  repository: Repository!
}

type Issue implements Node {
  id: ID!
  number: Int!
  title: String!
  url: URI!
  createdAt: DateTime!
  state: IssueState!
  author: User
  repository: Repository!
}

type PullRequestReview implements Node {
  id: ID!
  url: URI!
  createdAt: DateTime!
  state: PullRequestReviewState!
  author: User
  comments(first: Int, after: String): PullRequestReviewCommentConnection!
  pullRequest: PullRequest!
  repository: Repository!
}

type IssueComment implements Node {
  id: ID!
  url: URI!
  createdAt: DateTime!
  updatedAt: DateTime!
  author: User
  repository: Repository!
  issue: Issue!
  pullRequest: PullRequest
}

type Release implements Node {
  id: ID!
  name: String
  tagName: String!
  url: URI!
  createdAt: DateTime!
  publishedAt: DateTime
  author: User
}
"""

UTC = dt.UTC


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _cursor(index: int) -> str:
    return base64.b64encode(f"cursor:v2:{index}".encode()).decode()


def _index(cursor: str | None) -> int:
    if not cursor:
        return 0
    return int(base64.b64decode(cursor).decode().rsplit(":", 1)[1]) + 1


def connection(items: list[Any], first: int | None, after: str | None) -> dict[str, Any]:
    """A GraphQL connection page, as GitHub pages (at most 100 a page; `first` is required in practice)."""
    if first is None or not 1 <= first <= 100:
        raise graphql.GraphQLError("You must provide a `first` or `last` value between 1 and 100 to page.")
    start = _index(after)
    page = items[start : start + first]
    end = start + len(page) - 1
    return {
        "totalCount": len(items),
        "nodes": page,
        "pageInfo": {
            "hasNextPage": start + len(page) < len(items),
            "endCursor": _cursor(end) if page else None,
            "hasPreviousPage": start > 0,
            "startCursor": _cursor(start) if page else None,
        },
    }


@dataclass
class World:
    """GitHub's data as the double serves it: users, repositories, organisations and the work done in them."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # lower-case login → user
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)  # lower-case owner/name → repository
    pull_requests: list[dict[str, Any]] = field(default_factory=list)
    issues: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # login → newest first
    _ids: int = 0
    _numbers: dict[str, int] = field(default_factory=dict)

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return base64.b64encode(f"0:{prefix}{self._ids}".encode()).decode().rstrip("=")

    def user(self, login: str) -> dict[str, Any]:
        key = login.lower()
        if key not in self.users:
            self.users[key] = {"__typename": "User", "id": self._id("U_"), "login": login}
            self.events[key] = []
        return self.users[key]

    def repo(self, full_name: str) -> dict[str, Any]:
        key = full_name.lower()
        if key not in self.repos:
            owner, name = full_name.split("/", 1)
            self.repos[key] = {
                "__typename": "Repository",
                "id": self._id("R_"),
                "name": name,
                "owner": owner,
                "nameWithOwner": full_name,
                "url": f"https://github.com/{full_name}",
            }
        return self.repos[key]

    def _number(self, repo: str) -> int:
        self._numbers[repo] = self._numbers.get(repo, 0) + 1
        return self._numbers[repo]

    def _event(self, login: str, kind: str, repo: dict[str, Any], at: dt.datetime) -> None:
        self.events[login.lower()].insert(
            0, {"id": str(self._ids), "type": kind, "repo": {"name": repo["nameWithOwner"]}, "created_at": iso(at)}
        )

    def _thread(self, typename: str, prefix: str, repo: str, what: str, path: str) -> dict[str, Any]:
        """What a pull request and an issue have alike: a number in their repository, a title and a URL."""
        r = self.repo(repo)
        number = self._number(repo)
        return {
            "__typename": typename,
            "id": self._id(prefix),
            "number": number,
            "title": f"{what} {number} in {r['name']}",
            "url": f"{r['url']}/{path}/{number}",
            "repository": r,
        }

    def pull_request(
        self, author: str, repo: str, at: dt.datetime, *, merged_at: dt.datetime | None = None, size: int = 10
    ) -> dict[str, Any]:
        pr = self._thread("PullRequest", "PR_", repo, "Change", "pull") | {
            "createdAt": iso(at),
            "mergedAt": iso(merged_at) if merged_at else None,
            "state": "MERGED" if merged_at else "OPEN",
            "additions": size,
            "deletions": size // 3,
            "author": self.user(author),
        }
        self.pull_requests.append(pr)
        self._event(author, "PullRequestEvent", pr["repository"], at)
        return pr

    def merge(self, pr: dict[str, Any], at: dt.datetime) -> None:
        pr["mergedAt"], pr["state"] = iso(at), "MERGED"

    def issue(self, author: str, repo: str, at: dt.datetime) -> dict[str, Any]:
        issue = self._thread("Issue", "I_", repo, "Problem", "issues") | {
            "createdAt": iso(at),
            "state": "OPEN",
            "author": self.user(author),
        }
        self.issues.append(issue)
        self._event(author, "IssuesEvent", issue["repository"], at)
        return issue

    def review(self, author: str, pr: dict[str, Any], at: dt.datetime, comments: int = 0) -> dict[str, Any]:
        review = {
            "__typename": "PullRequestReview",
            "id": self._id("PRR_"),
            "url": f"{pr['url']}#pullrequestreview-{self._ids}",
            "createdAt": iso(at),
            "state": "APPROVED" if comments == 0 else "COMMENTED",
            "author": self.user(author),
            "comments": {"totalCount": comments},
            "pullRequest": pr,
            "repository": pr["repository"],
        }
        self.reviews.append(review)
        self._event(author, "PullRequestReviewEvent", pr["repository"], at)
        return review

    def comment(self, author: str, on: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
        comment = {
            "__typename": "IssueComment",
            "id": self._id("IC_"),
            "url": f"{on['url']}#issuecomment-{self._ids}",
            "createdAt": iso(at),
            "updatedAt": iso(at),
            "author": self.user(author),
            "repository": on["repository"],
            "issue": on,
            "pullRequest": on if on["__typename"] == "PullRequest" else None,
        }
        self.comments.append(comment)
        self._event(author, "IssueCommentEvent", on["repository"], at)
        return comment

    def release(self, author: str, repo: str, at: dt.datetime, tag: str) -> dict[str, Any]:
        r = self.repo(repo)
        release = {
            "__typename": "Release",
            "id": self._id("RE_"),
            "name": f"{r['name']} {tag}",
            "tagName": tag,
            "url": f"{r['url']}/releases/tag/{tag}",
            "createdAt": iso(at),
            "publishedAt": iso(at),
            "author": self.user(author),
            "repository": r,
        }
        self.releases.append(release)
        self._event(author, "ReleaseEvent", r, at)
        return release

    def org_repos(self, org: str) -> list[dict[str, Any]]:
        return sorted(
            (r for r in self.repos.values() if r["owner"].lower() == org.lower()), key=lambda r: r["nameWithOwner"]
        )

    def by_id(self) -> dict[str, dict[str, Any]]:
        objects = [*self.pull_requests, *self.issues, *self.reviews, *self.comments, *self.releases]
        return {o["id"]: o for o in [*objects, *self.users.values(), *self.repos.values()]}


def _between(items: list[dict[str, Any]], login: str, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    return sorted(
        (i for i in items if i["author"]["login"].lower() == login and since <= _parse_time(i["createdAt"]) <= until),
        key=lambda i: i["createdAt"],
    )


def build_schema(world: World) -> graphql.GraphQLSchema:
    """GitHub's schema subset with resolvers over `world`."""
    schema = graphql.build_schema(SCHEMA)
    fields = {name: schema.type_map[name].fields for name in ("Query", "User", "ContributionsCollection")}
    fields_of = schema.type_map

    def user(_root: Any, info: Any, login: str) -> dict[str, Any] | None:
        found = world.users.get(login.lower())
        if found is None:
            message = f"Could not resolve to a User with the login of '{login}'."
            info.context["errors"].append({"type": "NOT_FOUND", "path": ["user"], "message": message})
        return found

    def repository(_root: Any, info: Any, owner: str, name: str) -> dict[str, Any] | None:
        found = world.repos.get(f"{owner}/{name}".lower())
        if found is None:
            info.context["errors"].append(
                {
                    "type": "NOT_FOUND",
                    "path": [info.path.key],
                    "message": f"Could not resolve to a Repository with the name '{owner}/{name}'.",
                }
            )
        return found

    def nodes(_root: Any, _info: Any, ids: list[str]) -> list[dict[str, Any] | None]:
        objects = world.by_id()
        return [objects.get(i) for i in ids]

    def contributions(root: dict[str, Any], _info: Any, **args: Any) -> dict[str, Any]:
        until = _parse_time(args["to"]) if args.get("to") else dt.datetime.now(UTC)
        since = _parse_time(args["from"]) if args.get("from") else until - dt.timedelta(days=365)
        if until - since > dt.timedelta(days=366):
            raise graphql.GraphQLError("The total time spanned by 'from' and 'to' must not exceed 1 year")
        return {"login": root["login"].lower(), "since": since, "until": until}

    def made(kind: str, key: str) -> Any:
        def resolve(
            root: dict[str, Any], _info: Any, first: int | None = None, after: str | None = None, **_: Any
        ) -> Any:
            items = _between(getattr(world, kind), root["login"], root["since"], root["until"])
            nodes = [
                {
                    "occurredAt": i["createdAt"],
                    "repository": i["repository"],
                    "pullRequest": i.get("pullRequest"),
                    key: i,
                }
                for i in items
            ]
            return connection(nodes, first, after)

        return resolve

    def issue_comments(
        root: dict[str, Any], _info: Any, first: int | None = None, after: str | None = None, **args: Any
    ):
        mine = [c for c in world.comments if c["author"]["login"].lower() == root["login"].lower()]
        order = args.get("orderBy")
        mine.sort(key=lambda c: (c["updatedAt"], c["id"]), reverse=order is not None and order["direction"] == "DESC")
        return connection(mine, first, after)

    def releases(root: dict[str, Any], _info: Any, first: int | None = None, after: str | None = None, **args: Any):
        mine = [r for r in world.releases if r["repository"]["id"] == root["id"]]
        order = args.get("orderBy")
        mine.sort(key=lambda r: (r["createdAt"], r["id"]), reverse=order is None or order["direction"] == "DESC")
        return connection(mine, first, after)

    fields["Query"]["user"].resolve = user
    fields["Query"]["repository"].resolve = repository
    fields["Query"]["nodes"].resolve = nodes
    fields["User"]["contributionsCollection"].resolve = contributions
    fields["User"]["issueComments"].resolve = issue_comments
    fields["ContributionsCollection"]["pullRequestContributions"].resolve = made("pull_requests", "pullRequest")
    fields["ContributionsCollection"]["issueContributions"].resolve = made("issues", "issue")
    fields["ContributionsCollection"]["pullRequestReviewContributions"].resolve = made("reviews", "pullRequestReview")
    fields_of["Repository"].fields["releases"].resolve = releases
    fields_of["Node"].resolve_type = lambda value, *_: value["__typename"]
    return schema


@dataclass
class Logged:
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: str


class GitHubDouble:
    """The server: `url` is its REST base (GraphQL at `url/graphql`); `fail(...)` queues faults; `log` the requests."""

    def __init__(self, world: World, token: str, retry_after: int = 1):
        self.world = world
        self.token = token
        self.retry_after = retry_after
        self.log: list[Logged] = []
        self.faults: list[tuple[str, str, int]] = []  # (path prefix, "secondary" | "primary" | "server_error", wait)
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.schema = build_schema(world)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, path_prefix: str, kind: str, times: int = 1, wait: int | None = None) -> None:
        """Answer the next `times` requests whose path starts with `path_prefix` with a fault of `kind`; rate limits
        ask for `wait` seconds (default: `retry_after`)."""
        with self._lock:
            self.faults += [(path_prefix, kind, self.retry_after if wait is None else wait)] * times

    def requests(self, path_prefix: str = "/", status: int | None = None) -> list[Logged]:
        with self._lock:
            return [r for r in self.log if r.path.startswith(path_prefix) and (status is None or r.status == status)]

    @contextmanager
    def running(self) -> Iterator[GitHubDouble]:
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:  # the request log is `double.log`
                pass

            def do_GET(self) -> None:
                double._handle(self, "GET")

            def do_POST(self) -> None:
                double._handle(self, "POST")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

    # Answering

    def _rate_headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "4999",
            "x-ratelimit-reset": str(int(time.time()) + 3600),
            "x-ratelimit-used": "1",
        }

    def _handle(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        url = urlsplit(handler.path)
        status, headers, payload = self._answer(method, url.path, parse_qs(url.query), handler.headers, body)
        with self._lock:
            self.log.append(Logged(method, handler.path, status, dict(handler.headers.items()), body))
        data = b"" if payload is None else json.dumps(payload).encode()
        handler.send_response(status)
        for key, value in {**self._rate_headers(), **headers}.items():
            handler.send_header(key, value)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _fault(self, path: str) -> tuple[str | None, int]:
        with self._lock:
            for index, (prefix, kind, wait) in enumerate(self.faults):
                if path.startswith(prefix):
                    del self.faults[index]
                    return kind, wait
        return None, 0

    def _answer(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: str
    ) -> tuple[int, dict[str, str], Any]:
        if headers.get("Authorization") not in (f"token {self.token}", f"Bearer {self.token}"):
            return 401, {}, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}
        fault, wait = self._fault(path)
        if fault == "secondary":
            return (
                403,
                {"retry-after": str(wait)},
                {
                    "message": "You have exceeded a secondary rate limit. "
                    "Please wait a few minutes before you try again."
                },
            )
        if fault == "primary":
            reset = int(time.time()) + wait
            return (
                403,
                {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
                {"message": "API rate limit exceeded for user ID 1."},
            )
        if fault == "server_error":
            return 502, {}, {"message": "Server Error"}
        if method == "POST" and path == "/graphql":
            return self._graphql(body)
        parts = path.strip("/").split("/")
        if method == "GET" and len(parts) == 4 and parts[0] == "users" and parts[2:] == ["events", "public"]:
            if parts[1].lower() not in self.world.users:
                return 404, {}, {"message": "Not Found"}
            return self._paged(path, query, headers, self.world.events[parts[1].lower()])
        if method == "GET" and len(parts) == 3 and parts[0] == "orgs" and parts[2] == "repos":
            repos = self.world.org_repos(parts[1])
            if not repos:
                return 404, {}, {"message": "Not Found"}
            listing = [{"id": r["id"], "name": r["name"], "full_name": r["nameWithOwner"]} for r in repos]
            return self._paged(path, query, headers, listing)
        return 404, {}, {"message": "Not Found"}

    def _paged(
        self, path: str, query: dict[str, list[str]], headers: Any, items: list[Any]
    ) -> tuple[int, dict[str, str], Any]:
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)
        page = int(query.get("page", ["1"])[0])
        chunk = items[(page - 1) * per_page : page * per_page]
        etag = 'W/"' + hashlib.sha256(json.dumps(chunk).encode()).hexdigest() + '"'
        answer_headers = {"ETag": etag}
        if page * per_page < len(items):
            params = {key: values[0] for key, values in query.items()} | {"page": str(page + 1)}
            answer_headers["Link"] = f'<{self.url}{path}?{urlencode(params)}>; rel="next"'
        if headers.get("If-None-Match") == etag:
            return 304, answer_headers, None
        return 200, answer_headers, chunk

    def _graphql(self, body: str) -> tuple[int, dict[str, str], Any]:
        try:
            request = json.loads(body)
        except ValueError:
            return 400, {}, {"message": "Problems parsing JSON"}
        context: dict[str, Any] = {"errors": []}
        result = graphql.graphql_sync(
            self.schema, request["query"], variable_values=request.get("variables"), context_value=context
        )
        answer: dict[str, Any] = {"data": result.data}
        errors = [*context["errors"], *({"message": e.message} for e in result.errors or [])]
        if errors:
            answer["errors"] = errors
        return 200, {}, answer


def make_world(
    engineers: list[str],
    key_repos: list[str],
    other_repos: list[str],
    *,
    start: dt.datetime,
    end: dt.datetime,
    per_repo: int = 3,
    bare_repos: Sequence[str] = (),
    seed: int = 13,
) -> World:
    """Work of `engineers` from `start` to `end`: in each key repository, `per_repo` of each kind of item per engineer
    (pull requests, some merged, some open, reviews with comments, issues, comments, releases), and the same in
    other repositories (work that is not upstream). Others' pull requests are there to review."""
    world = World()
    rng = random.Random(seed)
    span = (end - start).total_seconds()

    def moment() -> dt.datetime:
        return start + dt.timedelta(seconds=rng.uniform(0, span))

    for login in engineers:
        world.user(login)
    world.user("someone-else")
    for repo in bare_repos:
        world.repo(repo)
    for repo in [*key_repos, *other_repos]:
        for login in engineers:
            for _ in range(per_repo):
                opened = moment()
                merged = opened + dt.timedelta(hours=rng.uniform(1, 96)) if rng.random() < 0.7 else None
                merged = merged if merged and merged < end else None
                pr = world.pull_request(login, repo, opened, merged_at=merged, size=rng.randrange(1, 2000))
                issue = world.issue(login, repo, moment())
                theirs = world.pull_request("someone-else", repo, moment())
                world.review(login, theirs, moment(), comments=rng.randrange(0, 4))
                world.comment(login, rng.choice([pr, issue, theirs]), moment())
        if rng.random() < 0.5:
            world.release(rng.choice(engineers), repo, moment(), f"v{rng.randrange(1, 9)}.{rng.randrange(10)}")
    return world
