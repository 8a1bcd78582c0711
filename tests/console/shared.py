"""The console tests' fleet: two shared-password hubs, an operator, a hub admin and plain users, and usage in the
fleet database written through the usage ledger's own API. (Imported by the tests and by conftest.py alike.)"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from hubfleet.db import open_database
from hubfleet.spec import load
from hubfleet.upstream.reports import add_noncode
from hubfleet.upstream.tables import Item
from hubfleet.usage import ledger
from tests.helpers import RunningFleet, unique_hub

A, B = unique_hub("ca"), unique_hub("cb")
PASSWORD = "console-test-password"
ADMIN_PASSWORD = "console-admin-password-32-characters"  # shared-password hubs' admins log in with the admin password
OPERATOR = "olga"  # a user of hub A (not its admin), listed in console.operators as A:olga
HUB_ADMIN = "bea"  # an admin of hub B only
PLAIN_USER = "pia"  # a member of hub A, not an admin
GIB = 1024**3

TODAY = dt.datetime.now(dt.UTC).date()
MONTH = TODAY.replace(day=1)

HUBS = f"""\
{A}:
  display_name: Alpha Research
  community: {{name: Alpha Lab}}
  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [{OPERATOR}]}}
  groups:
    physics: [{PLAIN_USER}, paul]
    chemistry: [chen]
  plan: {{type: paid, monthly_fee: 40, monthly_budget: 60}}
{B}:
  display_name: Beta College
  auth: {{type: shared-password, password: {PASSWORD}, admins: [{HUB_ADMIN}], admin_password: {ADMIN_PASSWORD}}}
  groups:
    intro: [ben, bo]
  plan: {{type: pilot, start: {MONTH - dt.timedelta(days=30)}, end: {MONTH + dt.timedelta(days=60)}, budget: 25}}
"""

CONSOLE = f"""\
console:
  operators: ["{A}:{OPERATOR}"]
organisation:
  name: Console Org
  engineers: [{{name: Ada Lovelace, github: ada}}, {{name: Bob Ross, github: bob, fte: 0.5}}]
  projects: [{{name: jupyterhub, tier: 1, orgs: [jupyterhub]}}, {{name: dask, repos: [dask/distributed]}}]
  staff: {{hourly_rate: 50, hours_per_hub: 2}}
"""


def password(user: str) -> str:
    """The password `user` logs in with (admins have their own)."""
    return ADMIN_PASSWORD if user == HUB_ADMIN else PASSWORD


@dataclass(frozen=True)
class ConsoleFleet:
    """The running fleet and the month its usage was recorded in."""

    fleet: RunningFleet
    month: dt.date

    @property
    def month_text(self) -> str:
        return f"{self.month:%Y-%m}"

    def cost_json(self) -> dict:
        """`hubfleet cost --json` for the month."""
        return json.loads(self.fleet.cli("cost", "--month", self.month_text, "--json").stdout)


def record_usage(url: str) -> None:
    """Usage for this month, as the collector would record it: servers of both hubs over a few days, groups, logins
    and home directories (data in the real ledger, through its API)."""
    sessions = open_database(url)
    days = sorted({MONTH + dt.timedelta(days=offset) for offset in (0, 3, 7, 12)} | {TODAY})
    days = [day for day in days if day <= TODAY]
    people = {A: [(PLAIN_USER, 2.0), ("paul", 1.0), ("chen", 3.0), (OPERATOR, 0.5)], B: [("ben", 1.5), ("bo", 0.5)]}
    readings = []
    for number, day in enumerate(days):
        start = dt.datetime.combine(day, dt.time(1, 0), dt.UTC).timestamp()
        for hub, users in people.items():
            for user, hours in users:
                seconds = 3600 * hours * (1 + number % 2)
                readings.append(
                    ledger.Reading(
                        hub=hub,
                        user=user,
                        kind="server",
                        start=start,
                        seconds=seconds,
                        cpu_seconds=0.4 * seconds,
                        cpu_request=0.5,
                        memory_bytes=GIB // 2,
                        memory_request=GIB,
                    )
                )
    with sessions.begin() as session:
        ledger.record_samples(session, readings)
        ledger.rollup(session, dt.datetime.combine(days[0], dt.time(0), dt.UTC).timestamp())
        ledger.set_group_members(session, A, {"physics": [PLAIN_USER, "paul"], "chemistry": ["chen"]})
        ledger.set_group_members(session, B, {"intro": ["ben", "bo"]})
        for hub, users in people.items():
            for user, _ in users:
                ledger.record_activity(session, hub, user, dt.datetime.combine(TODAY, dt.time(2, 0), dt.UTC), 1)
                ledger.record_home_bytes(session, hub, user, TODAY, 3 * GIB)


def record_contributions(url: str, fleet_file: str) -> None:
    """Upstream work this month as a sync would store it (pull requests, reviews, a comment elsewhere), and a talk."""
    organisation = load(fleet_file).organisation
    sessions = open_database(url)
    when = dt.datetime.combine(TODAY, dt.time(1, 0))
    rows = [
        ("pull_request", "ada", "jupyterhub/jupyterhub"),
        ("pull_request", "ada", "dask/distributed"),
        ("review", "ada", "jupyterhub/binderhub"),
        ("pull_request", "bob", "jupyterhub/jupyterhub"),
        ("comment", "bob", "acme/internal"),  # not a key project: counts against bob's upstream share
    ]
    with sessions.begin() as session:
        for number, (kind, login, repo) in enumerate(rows, start=1):
            session.add(
                Item(
                    kind=kind,
                    github_id=f"console-{number}",
                    login=login,
                    repo=repo,
                    number=number,
                    title=f"item {number}",
                    url=f"https://github.com/{repo}/pull/{number}",
                    created_at=when,
                    merged_at=when if kind == "pull_request" else None,
                    state="MERGED",
                    additions=5,
                    deletions=1,
                    comments=0,
                )
            )
        add_noncode(
            session,
            organisation,
            engineer="bob",
            project="dask",
            kind="talk",
            day=TODAY,
            hours=2,
            title="Dask for beginners",
        )
