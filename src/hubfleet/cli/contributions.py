"""`hubfleet contributions sync|add|report|support-report`: the organisation's open-source contribution ledger.

The organisation (engineers, key projects, target, GitHub settings) comes from the fleet file's `organisation:`;
the ledger lives in the fleet database (as the usage reports do).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from sqlalchemy.orm import Session, sessionmaker

from hubfleet import db
from hubfleet.cli.output import STATE_DIR_OPTION, console, errors, fail
from hubfleet.cli.reports import (
    CSV_OPTION,
    FILE_OPTION,
    JSON_OPTION,
    PLOT_OPTION,
    emit,
    load_fleet,
    parse_date,
    write_plot,
)
from hubfleet.common.state import database_url
from hubfleet.spec import Fleet

app = typer.Typer(help="The organisation's open-source contribution ledger (fleet file: `organisation:`).")

SINCE_OPTION: Any = typer.Option(None, "--since", help="first day, YYYY-MM-DD (default: a year ago)")
UNTIL_OPTION: Any = typer.Option(None, "--until", help="last day, YYYY-MM-DD (default: today)")
OUTPUT_OPTION: Any = typer.Option(None, "--output", "-o", help="write the Markdown here (default: stdout)")


def _ledger(file: Path | None, state_dir: Path | None) -> tuple[Fleet, sessionmaker[Session]]:
    """The fleet and its database (created if the fleet has none yet: the ledger may come before the hubs)."""
    fleet, root = load_fleet(file, state_dir)
    if not fleet.organisation.engineers:
        raise fail("the fleet file names no engineers: add `organisation.engineers` (docs/open-source-support.md)")
    url = database_url(fleet, root)
    if url == db.default_url(root):
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
    return fleet, db.open_database(url)


def _period(since: str | None, until: str | None) -> tuple[dt.date, dt.date]:
    today = dt.datetime.now(dt.UTC).date()
    last = parse_date(until, "--until", today)
    first = parse_date(since, "--since", (last or today) - dt.timedelta(days=365))
    assert first is not None and last is not None
    if first > last:
        raise fail("--since is after --until")
    return first, last


@app.command()
def sync(file: Path | None = FILE_OPTION, state_dir: Path | None = STATE_DIR_OPTION) -> None:
    """Fetch the engineers' work on GitHub since the last sync (a first sync goes back `github.history`)."""
    from hubfleet.upstream.github import GitHubClient, GitHubError, read_token
    from hubfleet.upstream.sync import sync as run

    fleet, sessions = _ledger(file, state_dir)
    settings = fleet.organisation.github
    try:
        token = read_token(settings)
    except GitHubError as exc:
        raise fail(str(exc)) from None
    with console.status("contributions sync: starting") as status:

        def step(text: str) -> None:
            status.update(f"contributions sync: {escape(text)}")

        def waiting(seconds: float, why: str) -> None:
            errors.print(f"[yellow]GitHub: {escape(why)}: waiting {seconds:.0f} s[/]")

        with GitHubClient(settings, token, on_wait=waiting) as client:
            result = run(sessions, fleet.organisation, client, on_step=step)
    for warning in result.warnings:
        errors.print(f"[yellow]warning:[/] {escape(warning)}")
    console.print(
        f"{len(result.engineers_synced)} engineers synced, {len(result.engineers_unchanged)} without new public "
        f"activity; {result.new_items} new items, {result.updated_items} updated; {result.requests} requests "
        f"in {result.seconds:.1f} s"
        + (f" ({result.waited_seconds:.0f} s waiting for GitHub)" if result.waited_seconds else "")
    )
    if result.stopped:
        raise fail(f"the sync stopped: {result.stopped}", code=2)


@app.command()
def add(
    engineer: str = typer.Argument(help="the engineer's GitHub login"),
    project: str = typer.Argument(help="the key project's name"),
    title: str = typer.Option(..., "--title", help="what was done (a talk's title, the mentee, …)"),
    kind: str = typer.Option(
        "other", "--kind", help="talk, community-call, mentoring, docs-sprint, review-meeting, event, other"
    ),
    day: str | None = typer.Option(None, "--date", help="YYYY-MM-DD (default: today)"),
    hours: float = typer.Option(0.0, "--hours", help="time it took"),
    url: str | None = typer.Option(None, "--url", help="a link (slides, recording, notes)"),
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Record non-code work for a key project: a talk, a community call, mentoring, a docs sprint."""
    from hubfleet.upstream.reports import EntryError, add_noncode

    when = parse_date(day, "--date", dt.datetime.now(dt.UTC).date())
    assert when is not None
    fleet, sessions = _ledger(file, state_dir)
    try:
        with sessions.begin() as session:
            entry = add_noncode(
                session,
                fleet.organisation,
                engineer=engineer,
                project=project,
                kind=kind,
                day=when,
                hours=hours,
                title=title,
                url=url,
            )
            number = entry.id
    except EntryError as exc:
        raise fail(str(exc)) from None
    console.print(f"recorded #{number}: {escape(title)} ({kind}, {project}, {engineer}, {when})")


COLUMNS = [
    ("prs_opened", "PRs"),
    ("prs_merged", "merged"),
    ("reviews", "rev."),
    ("issues", "issues"),
    ("comments", "comm."),
    ("releases", "rel."),
    ("noncode", "other"),
]
"""Short headings, so that the table fits 80 columns: reviews, comments, releases, non-code entries."""


@app.command()
def report(
    by: str = typer.Option("engineer", "--by", help="engineer, project or month"),
    since: str | None = SINCE_OPTION,
    until: str | None = UNTIL_OPTION,
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
    as_csv: bool = CSV_OPTION,
    as_json: bool = JSON_OPTION,
    plot: Path | None = PLOT_OPTION,
) -> None:
    """Upstream work per engineer, key project or month: PRs opened and merged, reviews, issues, comments, releases,
    non-code entries; per engineer, the upstream share against the target."""
    from hubfleet.upstream.reports import BY, contribution_report

    if by not in BY:
        raise fail(f"--by is one of {', '.join(BY)}")
    first, last = _period(since, until)
    fleet, sessions = _ledger(file, state_dir)
    with sessions() as session:
        result = contribution_report(session, fleet.organisation, by=by, since=first, until=last)  # type: ignore[arg-type]
    records = []
    for row in result.rows:
        record: dict[str, Any] = {"key": row.key, "name": row.label, **row.counts.__dict__}
        if by == "project":
            record.update(tier=row.tier, name=f"{row.label} ({row.tier})")
        if by == "engineer":
            record.update(fte=row.fte, all_activity=row.all_activity, upstream_share=row.upstream_share)
            share = row.upstream_share
            record["share"] = "" if share is None else f"{share:.0%}" + (" !" if share < result.target else "")
        records.append(record)
    columns = [("name", "project (tier)" if by == "project" else by), *COLUMNS]
    if by == "engineer":
        columns.append(("share", "share"))
    title = f"Upstream work by {by}, {first} to {last}"
    if by == "engineer":
        title += f" (target {result.target:.0%}; ! below)"
    document = {
        "organisation": result.organisation,
        "by": by,
        "since": first,
        "until": last,
        "target": result.target,
        "rows": records,
        "total": result.total.__dict__,
    }
    emit(records, columns, title, as_csv, as_json, document)

    def figure(_plots: Any) -> Any:
        from hubfleet.upstream.plots import contributions_figure

        return contributions_figure(result)

    write_plot(plot, figure, title, records, columns)


@app.command("support-report")
def support_report(
    since: str | None = SINCE_OPTION,
    until: str | None = UNTIL_OPTION,
    output: Path | None = OUTPUT_OPTION,
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """The open-source support report, in Markdown: per key project who did what and the highlights; per engineer
    the upstream share against the target."""
    from hubfleet.upstream.support import support_report as make

    first, last = _period(since, until)
    fleet, sessions = _ledger(file, state_dir)
    with sessions() as session:
        text = make(session, fleet.organisation, since=first, until=last)
    if output is None:
        print(text, end="")
        return
    output.write_text(text, encoding="utf-8")
    errors.print(f"support report written to {escape(str(output))}")


def register(root: typer.Typer) -> None:
    """Add `hubfleet contributions …` to `root`."""
    root.add_typer(app, name="contributions")
