"""`hubfleet contributions sync|add|report|support-report` through the real command line, against the GitHub double
on loopback (GitHub itself is outside our reach in tests)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.upstream.conftest import ENGINEERS, NOW, START, TOKEN, organisation_data
from tests.upstream.github_double import GitHubDouble
from tests.upstream.test_sync import expected


def run(*args: str, columns: int = 200) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hubfleet", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": str(columns), "GITHUB_TOKEN": ""},
    )


@pytest.fixture
def fleet_file(tmp_path: Path, double: GitHubDouble) -> Path:
    (tmp_path / "github-token").write_text(TOKEN + "\n")
    organisation = organisation_data(double.url, token_file="github-token")
    fleet = {
        "name": "orgcli",
        "organisation": organisation,
        "hubs": {"orgcli": {"auth": {"type": "shared-password", "password": "org-cli-password"}}},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    return path


def test_sync_report_add_and_support_report(fleet_file: Path, double: GitHubDouble, tmp_path: Path) -> None:
    where = ("--file", str(fleet_file), "--state-dir", str(tmp_path / "state"))
    synced = run("contributions", "sync", *where)
    assert synced.returncode == 0, synced.stderr
    assert "2 engineers synced" in synced.stdout and f"{len(double.log)} requests" in synced.stdout
    assert TOKEN not in synced.stdout + synced.stderr

    since, until = START.date(), NOW.date()
    period = ("--since", str(since), "--until", str(until))
    report = run("contributions", "report", *period, "--json", *where)
    assert report.returncode == 0, report.stderr
    document = json.loads(report.stdout)
    start, end = dt.datetime.combine(since, dt.time(), dt.UTC), dt.datetime.combine(until, dt.time(), dt.UTC)
    for row in document["rows"]:
        counts = expected(double.world, row["key"], None, start, end + dt.timedelta(days=1))
        assert {key: row[key] for key in counts.__dict__} == counts.__dict__
    assert [row["key"] for row in document["rows"]] == ENGINEERS

    added = run(
        "contributions",
        "add",
        "bob",
        "dask",
        "--kind",
        "talk",
        "--title",
        "Dask at EuroSciPy",
        "--hours",
        "4",
        "--date",
        str(until),
        "--url",
        "https://example.org/slides",
        *where,
    )
    assert added.returncode == 0, added.stderr
    refused = run("contributions", "add", "eve", "dask", "--title", "x", *where)
    assert refused.returncode == 1 and "no engineer with GitHub login 'eve'" in refused.stderr

    table = run("contributions", "report", "--by", "project", *period, *where, columns=80)
    assert table.returncode == 0, table.stderr
    assert "jupyterhub" in table.stdout and "dask" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    engineers = run("contributions", "report", *period, *where, columns=80)
    assert max(len(line) for line in engineers.stdout.splitlines()) <= 80
    assert "Ada Lovelace" in engineers.stdout

    plot = tmp_path / "contributions.png"
    assert run("contributions", "report", "--by", "month", *period, "--plot", str(plot), *where).returncode == 0
    assert plot.read_bytes().startswith(b"\x89PNG")

    markdown = tmp_path / "support.md"
    made = run("contributions", "support-report", *period, "--output", str(markdown), *where)
    assert made.returncode == 0, made.stderr
    text = markdown.read_text()
    for heading in (
        "# Open-source support report: Org Test",
        "### jupyterhub (tier 1",
        "### dask (tier 2",
        "## Engineers",
    ):
        assert heading in text
    assert "Largest merged pull requests:" in text and "[Dask at EuroSciPy](https://example.org/slides)" in text
    assert "Bob Ross" in text and "20%" in text


def test_sync_without_a_token_says_what_to_do(tmp_path: Path, double: GitHubDouble) -> None:
    fleet = {
        "name": "orgcli",
        "organisation": organisation_data(double.url),
        "hubs": {"orgcli": {"auth": {"type": "shared-password", "password": "org-cli-password"}}},
    }
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    result = run("contributions", "sync", "--file", str(tmp_path / "fleet.yaml"), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 1
    assert "no GitHub token" in result.stderr and "GITHUB_TOKEN" in result.stderr
