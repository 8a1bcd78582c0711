"""The contribution ledger at scale: a year's sync of 10 engineers x 30 key repositories, and reports over 100,000
stored items.

Usage (from the repository root):

    .venv/bin/python bench/upstream.py [--engineers 10] [--repos 30] [--items 100000] [--repeats 5]
                                       [--out bench/results/upstream.json]

Part 1 (sync): the GitHub double of the tests (tests/upstream/github_double.py: GitHub's GraphQL schema subset on
graphql-core and its REST endpoints, on 127.0.0.1; GitHub itself is outside a benchmark's reach) holds a year of
work: in each key repository, per engineer, 3 pull requests (70 % merged), 3 issues, 3 reviews of others' pull
requests and 3 comments, and releases. `hubfleet contributions sync` runs against it into a fresh SQLite fleet
database: a first sync (a year of history), then a second with nothing new (the incremental case). Timed: wall time
and requests. Baseline (named `rest-per-repository`, computed from the double's data, not run): the requests a
REST-only sync would need for the same data — per repository, the issues-and-pull-requests list, the issue comments
and the releases (100 a page), and one reviews request per pull request (REST has no repository-wide review list).

Part 2 (reports): ITEMS synthetic items (the kinds in the ledger's proportions, over 10 engineers, 30 key and 10
other repositories, a year) are bulk-inserted; then, timed REPEATS times each: `contribution_report` by engineer,
project and month over the year, and the Markdown support report. Baseline (named `sql-group-by`): one SQL
`GROUP BY login, repo, kind` count over the same rows — the least any report must do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import REPO, log, machine_info, summary, write_results
from sqlalchemy import func, select

from hubfleet import db
from hubfleet.spec.organisation import Organisation
from hubfleet.upstream.github import GitHubClient
from hubfleet.upstream.reports import contribution_report
from hubfleet.upstream.support import support_report
from hubfleet.upstream.sync import sync
from hubfleet.upstream.tables import ITEM_KINDS, Item
from tests.upstream.github_double import GitHubDouble, World, make_world

DEFAULT_OUT = REPO / "bench" / "results" / "upstream.json"
TOKEN = "bench-token-not-a-real-one"
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
YEAR = dt.timedelta(days=365)


def organisation(engineers: list[str], repos: list[str], api_url: str) -> Organisation:
    return Organisation.model_validate(
        {
            "name": "Bench",
            "engineers": [{"name": login.title(), "github": login} for login in engineers],
            "projects": [{"name": f"project{i}", "tier": 1 + i % 3, "repos": repos[i::10]} for i in range(10)],
            "github": {"api_url": api_url},
        }
    )


def rest_baseline(world: World) -> int:
    """Requests a REST-only sync of the same year would take (see the module's docstring)."""
    requests = 0
    for repo in world.repos.values():

        def in_repo(items: list[dict[str, Any]], repo: dict[str, Any] = repo) -> list[dict[str, Any]]:
            return [i for i in items if i["repository"]["id"] == repo["id"]]

        prs, issues = in_repo(world.pull_requests), in_repo(world.issues)
        requests += max(1, math.ceil((len(prs) + len(issues)) / 100))  # GET /repos/{r}/issues?state=all&since=
        requests += max(1, math.ceil(len(in_repo(world.comments)) / 100))  # GET /repos/{r}/issues/comments?since=
        requests += max(1, math.ceil(len(in_repo(world.releases)) / 100))  # GET /repos/{r}/releases
        requests += len(prs)  # GET /repos/{r}/pulls/{n}/reviews, one per pull request
    return requests


def sync_part(engineers: int, repos: int) -> dict[str, Any]:
    logins = [f"eng{i:02d}" for i in range(engineers)]
    names = [f"org{i % 5}/repo{i:02d}" for i in range(repos)]
    started = time.perf_counter()
    world = make_world(logins, names, [], start=NOW - YEAR + dt.timedelta(days=1), end=NOW, per_repo=3)
    log(f"sync: the double's year built in {time.perf_counter() - started:.1f} s")
    counts = {
        kind: len(getattr(world, kind)) for kind in ("pull_requests", "issues", "reviews", "comments", "releases")
    }
    log(f"sync: {counts}")
    with tempfile.TemporaryDirectory() as workdir, GitHubDouble(world, TOKEN).running() as double:
        org = organisation(logins, names, double.url)
        sessions = db.open_database(db.default_url(Path(workdir)))
        runs = {}
        for name, now in (("first", NOW), ("second_unchanged", NOW + dt.timedelta(hours=1))):
            before = len(double.log)
            with GitHubClient(org.github, TOKEN) as client:
                result = sync(sessions, org, client, now=now)
            assert result.complete, result.stopped
            log_part = double.log[before:]
            runs[name] = {
                "seconds": round(result.seconds, 3),
                "requests": result.requests,
                "graphql_requests": sum(1 for r in log_part if r.path == "/graphql"),
                "rest_requests": sum(1 for r in log_part if r.path != "/graphql"),
                "not_modified_304": sum(1 for r in log_part if r.status == 304),
                "new_items": result.new_items,
            }
            log(f"sync ({name}): {runs[name]}")
    baseline = rest_baseline(world)
    return {
        "engineers": engineers,
        "repositories": repos,
        "history_days": 365,
        "double_items": counts,
        "sync_seconds": runs["first"]["seconds"],
        "sync_requests": runs["first"]["requests"],
        "runs": runs,
        "baseline": "rest-per-repository (computed from the double's data, not run)",
        "baseline_requests": baseline,
        "requests_ratio_vs_baseline": round(runs["first"]["requests"] / baseline, 4),
    }


def timed(action: Callable[[], Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def report_part(count: int, repeats: int) -> dict[str, Any]:
    logins = [f"eng{i:02d}" for i in range(10)]
    keys = [f"org{i % 5}/repo{i:02d}" for i in range(30)]
    others = [f"elsewhere/repo{i}" for i in range(10)]
    org = organisation(logins, keys, "https://api.github.com")
    rng = random.Random(5)
    weights = {"pull_request": 2, "issue": 2, "review": 3, "comment": 6, "release": 0.1}
    kinds = rng.choices(list(weights), list(weights.values()), k=count)
    start = NOW.replace(tzinfo=None) - YEAR
    with tempfile.TemporaryDirectory() as workdir:
        sessions = db.open_database(db.default_url(Path(workdir)))
        rows = []
        for index, kind in enumerate(kinds):
            created = start + dt.timedelta(seconds=rng.uniform(0, YEAR.total_seconds()))
            merged = created + dt.timedelta(hours=5) if kind == "pull_request" and rng.random() < 0.7 else None
            repo = rng.choice(keys) if rng.random() < 0.6 else rng.choice(others)
            rows.append(
                {
                    "kind": kind,
                    "github_id": f"B{index}",
                    "login": rng.choice(logins),
                    "repo": repo,
                    "number": index,
                    "title": f"item {index}",
                    "url": f"https://github.com/{repo}/pull/{index}",
                    "created_at": created,
                    "merged_at": merged,
                    "state": "MERGED" if merged else "OPEN",
                    "additions": rng.randrange(2000),
                    "deletions": rng.randrange(500),
                    "comments": rng.randrange(4) if kind == "review" else 0,
                }
            )
        started = time.perf_counter()
        with sessions.begin() as session:
            session.execute(Item.__table__.insert(), rows)
        insert_seconds = time.perf_counter() - started
        log(f"reports: {count:,} items inserted in {insert_seconds:.1f} s")
        since, until = start.date(), NOW.date()
        results: dict[str, list[float]] = {}
        # Alternate the baseline and the reports run by run.
        for _ in range(repeats):
            with sessions() as session:
                results.setdefault("sql_group_by", []).extend(
                    timed(
                        lambda session=session: session.execute(
                            select(Item.login, Item.repo, Item.kind, func.count())
                            .where(Item.created_at.between(start, NOW.replace(tzinfo=None)))
                            .group_by(Item.login, Item.repo, Item.kind)
                        ).all(),
                        1,
                    )
                )
                for by in ("engineer", "project", "month"):
                    results.setdefault(f"report_by_{by}", []).extend(
                        timed(
                            lambda session=session, by=by: contribution_report(
                                session, org, by=by, since=since, until=until
                            ),
                            1,
                        )
                    )
                results.setdefault("support_report", []).extend(
                    timed(lambda session=session: support_report(session, org, since=since, until=until), 1)
                )
        with sessions() as session:
            total = contribution_report(session, org, by="engineer", since=since, until=until).total
        stats = {name: summary(values) for name, values in results.items()}
        baseline = stats["sql_group_by"]["median"]
        for name, values in stats.items():
            log(f"reports: {name}: median {values['median']:.3f} s")
    return {
        "items": count,
        "kinds": {kind: kinds.count(kind) for kind in ITEM_KINDS},
        "insert_seconds": round(insert_seconds, 3),
        "report_seconds": stats,
        "baseline": "sql-group-by",
        "ratios_vs_baseline": {
            name: round(values["median"] / baseline, 2) for name, values in stats.items() if name != "sql_group_by"
        },
        "total_upstream_activity": total.activity,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engineers", type=int, default=10)
    parser.add_argument("--repos", type=int, default=30)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    results = {"sync": sync_part(args.engineers, args.repos), "reports": report_part(args.items, args.repeats)}
    write_results(
        args.out,
        "upstream",
        started,
        {"engineers": args.engineers, "repositories": args.repos, "items": args.items, "repeats": args.repeats},
        "sync: wall time and requests of `contributions sync` (first: one year; second: nothing new) against the "
        "GitHub double; reports: seconds per contribution_report (by engineer, project, month) and support_report",
        [
            "sync: tests/upstream/github_double.py on 127.0.0.1 with a generated year; a fresh SQLite fleet database",
            "baseline rest-per-repository: requests a REST-only sync needs for the same data, computed, not run",
            "reports: bulk-inserted synthetic items; baseline sql-group-by alternated with the reports run by run",
        ],
        machine_info(),
        results,
    )
    sync_result, reports = results["sync"], results["reports"]
    log(
        f"sync of {args.engineers} engineers x {args.repos} repositories x one year: "
        f"{sync_result['sync_seconds']} s, {sync_result['sync_requests']} requests "
        f"(REST-only baseline: {sync_result['baseline_requests']}, ratio {sync_result['requests_ratio_vs_baseline']})"
    )
    by_engineer = reports["report_seconds"]["report_by_engineer"]["median"]
    log(
        f"reports over {args.items:,} items: by engineer {by_engineer:.3f} s"
        f" (x{reports['ratios_vs_baseline']['report_by_engineer']} of a bare SQL GROUP BY)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
