"""`contributions sync` against a GitHub double on loopback (GitHub itself is outside our reach in tests): paging
over 3+ pages, an incremental second sync with conditional requests, rate limits waited out or stopped at and
resumed, server errors retried, the token in no log; report figures equal to counts made from the double's data."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.spec.organisation import Organisation
from hubfleet.upstream.github import GitHubClient, GitHubError
from hubfleet.upstream.reports import Counts, add_noncode, contribution_report
from hubfleet.upstream.sync import sync
from hubfleet.upstream.tables import Item
from tests.upstream.conftest import DASK_REPO, ENGINEERS, NOW, START, TOKEN, organisation_data
from tests.upstream.github_double import GitHubDouble, World, iso


def run_sync(sessions: sessionmaker[Session], organisation: Organisation, now: dt.datetime = NOW) -> Any:
    with GitHubClient(organisation.github, TOKEN) as client:
        return sync(sessions, organisation, client, now=now)


def _key(repo: dict[str, Any]) -> str | None:
    name = repo["nameWithOwner"].lower()
    return "jupyterhub" if name.startswith("jupyterhub/") else "dask" if name == DASK_REPO else None


def _within(text: str | None, since: dt.datetime, until: dt.datetime) -> bool:
    return text is not None and since <= dt.datetime.fromisoformat(text.replace("Z", "+00:00")) < until


def expected(world: World, login: str, project: str | None, since: dt.datetime, until: dt.datetime) -> Counts:
    """Counts made straight from the double's data (independent of the ledger's code)."""

    def mine(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            i
            for i in items
            if i["author"]["login"] == login
            and _key(i["repository"]) is not None
            and (project is None or _key(i["repository"]) == project)
        ]

    def made(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [i for i in mine(items) if _within(i["createdAt"], since, until)]

    return Counts(
        prs_opened=len(made(world.pull_requests)),
        prs_merged=len([p for p in mine(world.pull_requests) if _within(p["mergedAt"], since, until)]),
        reviews=len(made(world.reviews)),
        review_comments=sum(r["comments"]["totalCount"] for r in made(world.reviews)),
        issues=len(made(world.issues)),
        comments=len(made(world.comments)),
        releases=len(made(world.releases)),
    )


def test_a_first_sync_pages_through_a_year_and_the_report_equals_the_doubles_data(
    double: GitHubDouble, organisation: Organisation, sessions: sessionmaker[Session]
) -> None:
    result = run_sync(sessions, organisation)
    assert result.complete, result.stopped
    assert result.engineers_synced == ENGINEERS and result.warnings == []
    assert result.requests == len(double.log)
    graphql = [r for r in double.requests("/graphql")]
    contributions = [r for r in graphql if "contributionsCollection" in r.body and '"ada"' in r.body]
    comments = [r for r in graphql if "issueComments" in r.body and '"ada"' in r.body]
    assert len(contributions) >= 3 and len(comments) >= 3, "every connection takes 3 pages of 100"
    assert len(double.requests("/orgs/jupyterhub/repos")) == 3, "the organisation's 234 repositories: 3 pages"

    since, until = START - dt.timedelta(days=1), NOW + dt.timedelta(days=1)
    with sessions() as session:
        report = contribution_report(session, organisation, by="engineer", since=since.date(), until=until.date())
        by_project = contribution_report(session, organisation, by="project", since=since.date(), until=until.date())
        by_month = contribution_report(session, organisation, by="month", since=since.date(), until=until.date())
    for row in report.rows:
        assert row.counts == expected(double.world, row.key, None, since, until), row.key
        assert row.counts.prs_opened >= 150 and row.counts.releases >= 0
        # Their whole activity: key projects and acme/internal, 4 kinds of item (releases are read for the key
        # repositories only).
        anywhere = [
            i
            for kind in ("pull_requests", "issues", "reviews", "comments", "releases")
            for i in getattr(double.world, kind)
            if i["author"]["login"] == row.key and (kind != "releases" or _key(i["repository"]) is not None)
        ]
        assert row.all_activity == len(anywhere)
        assert row.upstream_share == pytest.approx(row.counts.activity / len(anywhere))
    for row in by_project.rows:
        wanted = Counts()
        for login in ENGINEERS:
            wanted.add(expected(double.world, login, row.key, since, until))
        assert row.counts == wanted, row.key
    assert by_month.total == report.total == by_project.total
    # One month, checked on its own against the double.
    month = by_month.rows[len(by_month.rows) // 2]
    first = dt.datetime.strptime(month.key, "%Y-%m").replace(tzinfo=dt.UTC)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    wanted = Counts()
    for login in ENGINEERS:
        wanted.add(expected(double.world, login, None, first, following))
    assert month.counts == wanted


def test_a_second_sync_fetches_only_what_is_new(
    double: GitHubDouble, organisation: Organisation, sessions: sessionmaker[Session]
) -> None:
    assert run_sync(sessions, organisation).complete
    with sessions() as session:
        stored = session.scalar(select(func.count()).select_from(Item))
    open_pr = next(p for p in double.world.pull_requests if p["author"]["login"] == "bob" and p["state"] == "OPEN")
    later = NOW + dt.timedelta(hours=2)
    world = double.world
    new_pr = world.pull_request("ada", "jupyterhub/jupyterhub", NOW + dt.timedelta(hours=1))
    world.comment("ada", new_pr, NOW + dt.timedelta(hours=1, minutes=5))
    world.merge(open_pr, NOW + dt.timedelta(hours=1))  # opened before the first sync, merged after it
    first_log = len(double.log)

    result = run_sync(sessions, organisation, now=later)
    assert result.complete
    assert result.engineers_synced == ["ada"] and result.engineers_unchanged == ["bob"]
    assert result.new_items == 2
    second = double.log[first_log:]
    assert [r.status for r in second if "/events/" in r.path] == [200, 304]
    assert [r.status for r in second if r.path.startswith("/orgs/")] == [304], "conditional, and only page 1"
    assert all(r.headers.get("If-None-Match") for r in second if r.path.startswith("/orgs/"))
    ada_queries = [r for r in second if '"ada"' in r.body]
    assert len(ada_queries) == 2, "one page of contributions and one of comments"
    assert all(iso(NOW) in r.body for r in ada_queries if "contributionsCollection" in r.body)
    bob_queries = [r for r in second if '"bob"' in r.body]
    assert bob_queries == [], "bob had no new activity: no query at all"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == stored + 2
        merged = session.scalar(select(Item).where(Item.github_id == open_pr["id"]))
        assert merged is not None and merged.state == "MERGED" and merged.merged_at is not None


def test_a_secondary_rate_limit_and_a_server_error_are_waited_out(
    double: GitHubDouble, organisation: Organisation, sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    double.fail("/graphql", "secondary", wait=1)  # kept short by the double's Retry-After, waited in full
    double.fail("/orgs/", "server_error")
    started = time.monotonic()
    result = run_sync(sessions, organisation)
    assert result.complete, result.stopped
    assert result.waited_seconds >= 2 and time.monotonic() - started >= 2, "1 s Retry-After + 1 s backoff"
    assert [r.status for r in double.requests("/graphql")][:2] == [403, 200]
    assert [r.status for r in double.requests("/orgs/")][:2] == [502, 200]
    assert "secondary rate limit" in caplog.text and "HTTP 502" in caplog.text
    since, until = START - dt.timedelta(days=1), NOW + dt.timedelta(days=1)
    with sessions() as session:
        report = contribution_report(session, organisation, since=since.date(), until=until.date())
    assert report.rows[0].counts == expected(double.world, "ada", None, since, until)
    # The token went to GitHub on every request, and nowhere else.
    assert all(r.headers["Authorization"] == f"token {TOKEN}" for r in double.log)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(result)


def test_a_long_rate_limit_stops_the_sync_which_resumes_without_losing_anything(
    double: GitHubDouble, organisation: Organisation, sessions: sessionmaker[Session]
) -> None:
    # Ada's contributions take 3 pages: the third is refused with a reset an hour away (beyond max_wait).
    contributions = [0]

    original = double._answer

    def answer(method: str, path: str, query: Any, headers: Any, body: str) -> Any:
        if "contributionsCollection" in body:
            contributions[0] += 1
            if contributions[0] == 3:
                double.fail("/graphql", "primary", wait=3600)
        return original(method, path, query, headers, body)

    double._answer = answer  # type: ignore[method-assign]
    stopped = run_sync(sessions, organisation)
    assert stopped.stopped is not None and "max_wait" in stopped.stopped
    assert stopped.new_items >= 400, "the pages fetched before the stop are kept"
    with sessions() as session:
        kept = session.scalar(select(func.count()).select_from(Item))
    assert kept == stopped.new_items
    resumed = run_sync(sessions, organisation)
    assert resumed.complete
    assert resumed.engineers_synced == ENGINEERS, "not skipped: the stopped engineer's events ETag was not stored"
    ada = [r for r in double.log if "contributionsCollection" in r.body and '"ada"' in r.body and r.status == 200]
    assert len(ada) == 3, "pages 1 and 2 before the stop, page 3 after: none fetched twice"
    since, until = START - dt.timedelta(days=1), NOW + dt.timedelta(days=1)
    with sessions() as session:
        report = contribution_report(session, organisation, since=since.date(), until=until.date())
    for row in report.rows:
        assert row.counts == expected(double.world, row.key, None, since, until)


def test_a_bad_token_and_unknown_names_get_clear_messages(
    double: GitHubDouble, sessions: sessionmaker[Session]
) -> None:
    data = organisation_data(double.url)
    data["engineers"].append({"name": "Nobody", "github": "no-such-user"})
    data["projects"].append({"name": "gone", "orgs": ["no-such-org"]})
    organisation = Organisation.model_validate(data)
    with GitHubClient(organisation.github, "wrong-token") as client:
        refused = sync(sessions, organisation, client, now=NOW)
    assert refused.stopped is not None and "refused the token" in refused.stopped
    result = run_sync(sessions, organisation)
    assert result.complete
    assert any("no-such-user" in warning for warning in result.warnings)
    assert any("no-such-org" in warning for warning in result.warnings)


def test_noncode_entries_count_in_the_report(organisation: Organisation, sessions: sessionmaker[Session]) -> None:
    day = NOW.date()
    with sessions.begin() as session:
        add_noncode(
            session, organisation, engineer="ADA", project="dask", kind="talk", day=day, hours=3, title="Dask at SciPy"
        )
        add_noncode(
            session,
            organisation,
            engineer="bob",
            project="jupyterhub",
            kind="mentoring",
            day=day,
            hours=2.5,
            title="Outreachy intern",
        )
        for bad in ({"engineer": "eve"}, {"project": "numpy"}, {"kind": "party"}):
            arguments = {"engineer": "ada", "project": "dask", "kind": "talk", **bad}
            with pytest.raises(ValueError, match="|".join(bad.values())):
                add_noncode(session, organisation, day=day, hours=1, title="x", **arguments)
    with sessions() as session:
        by_project = contribution_report(session, organisation, by="project", since=day, until=day)
        by_engineer = contribution_report(session, organisation, since=day, until=day)
    assert [(r.key, r.counts.noncode, r.counts.noncode_hours) for r in by_project.rows] == [
        ("jupyterhub", 1, 2.5),
        ("dask", 1, 3.0),
    ]
    assert [(r.key, r.all_activity, r.upstream_share) for r in by_engineer.rows] == [("ada", 1, 1.0), ("bob", 1, 1.0)]


def test_github_error_never_holds_the_token(organisation: Organisation) -> None:
    settings = organisation.github.model_copy(update={"api_url": "http://127.0.0.1:9/", "retries": 0})
    with GitHubClient(settings, TOKEN) as client, pytest.raises(GitHubError) as caught:
        client.get("/users/ada/events/public")
    assert TOKEN not in str(caught.value) and "cannot reach GitHub" in str(caught.value)
