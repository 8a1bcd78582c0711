"""The contribution ledger's tests: a GitHub double with a year of two engineers' work, and an organisation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from hubfleet import db
from hubfleet.spec.organisation import Organisation
from tests.upstream.github_double import GitHubDouble, World, make_world

TOKEN = "ghp_orgtest_" + "x7Q2" * 8  # what a classic token looks like; must never appear in a log
ENGINEERS = ["ada", "bob"]
HUB_REPOS = ["jupyterhub/jupyterhub", "jupyterhub/binderhub"]
DASK_REPO = "dask/distributed"
OTHER_REPO = "acme/internal"  # not a key project: work there is not upstream
BARE_HUB_REPOS = [f"jupyterhub/extra-{i:03d}" for i in range(230)]  # the organisation lists them over 3 pages
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
START = NOW - dt.timedelta(days=300)


def organisation_data(api_url: str, **github: object) -> dict:
    return {
        "name": "Org Test",
        "engineers": [{"name": "Ada Lovelace", "github": "ada"}, {"name": "Bob Ross", "github": "bob", "fte": 0.5}],
        "projects": [
            {"name": "jupyterhub", "tier": 1, "orgs": ["jupyterhub"], "description": "Multi-user Jupyter"},
            {"name": "dask", "tier": 2, "repos": [DASK_REPO]},
        ],
        "upstream_target": 0.2,
        "github": {"api_url": api_url, "retry_backoff": 1, "max_wait": 60, **github},
    }


def build_world() -> World:
    """Enough work for every GraphQL connection of an engineer to take 3 pages of 100."""
    return make_world(
        ENGINEERS,
        [*HUB_REPOS, DASK_REPO],
        [OTHER_REPO],
        start=START,
        end=NOW - dt.timedelta(minutes=5),
        per_repo=60,
        bare_repos=BARE_HUB_REPOS,
    )


@pytest.fixture
def double() -> Iterator[GitHubDouble]:
    with GitHubDouble(build_world(), TOKEN).running() as running:
        yield running


@pytest.fixture
def organisation(double: GitHubDouble) -> Organisation:
    return Organisation.model_validate(organisation_data(double.url))


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = db.connect(db.default_url(tmp_path))
    db.migrate(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()
