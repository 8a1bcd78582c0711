"""The organisation that runs the fleet: its engineers, the open-source projects it supports, its upstream policy,
and what its staff time costs (read by the contribution ledger and by the sustainability model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, StringConstraints, field_validator, model_validator

from hubfleet.spec.base import HubName, Slug, SpecModel, refuse_doubles
from hubfleet.spec.units import Seconds

GitHubLogin = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?$"),
    Field(description="a GitHub user or organisation login (letters, digits and '-', at most 39 characters)"),
]
Repository = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?/[A-Za-z0-9._-]{1,100}$"),
    Field(description="a GitHub repository as `owner/name`"),
]


class Engineer(SpecModel):
    """One of the organisation's engineers, whose upstream work the ledger records."""

    name: str = Field(description="the engineer's name, as reports show it")
    github: GitHubLogin = Field(description="their GitHub login")
    fte: float = Field(1.0, gt=0, le=1, description="share of a full-time position (1 = full time)")


class KeyProject(SpecModel):
    """An open-source project the organisation supports: GitHub repositories, whole organisations, or both."""

    name: Slug = Field(description="name in reports (several repositories and organisations may form one project)")
    tier: Literal[1, 2, 3] = Field(
        2, description="1: we maintain it with others, 2: we contribute regularly, 3: we depend on it and help"
    )
    repos: list[Repository] = Field(default_factory=list, description="repositories, `owner/name`")
    orgs: list[GitHubLogin] = Field(
        default_factory=list, description="GitHub organisations all of whose repositories belong to the project"
    )
    description: str = Field("", description="a line for the support report")

    @model_validator(mode="after")
    def _something(self) -> KeyProject:
        if not self.repos and not self.orgs:
            raise ValueError("name at least one repository (`repos`) or organisation (`orgs`)")
        return self


class GitHubSync(SpecModel):
    """How `hubfleet contributions sync` talks to GitHub."""

    api_url: AnyHttpUrl = Field(
        AnyHttpUrl("https://api.github.com"),
        description="GitHub's REST API (GitHub Enterprise Server: `https://HOST/api/v3`); GraphQL is found beside it",
    )
    token_file: Path | None = Field(
        None, description="file holding a GitHub token (read-only, public data is enough); else `token_env`"
    )
    token_env: str = Field("GITHUB_TOKEN", description="environment variable holding the token, if no `token_file`")
    history: Seconds = Field(
        365 * 86400, description="how far back the first sync goes (later syncs fetch only what is new)"
    )
    max_wait: Seconds = Field(
        900,
        description="longest rate-limit wait; a longer one stops the sync (what was fetched is kept; run it again)",
    )
    retries: int = Field(3, ge=0, le=10, description="retries of a request GitHub answered with a server error")
    retry_backoff: Seconds = Field(2, description="wait before the first retry (doubling each time)")
    timeout: Seconds = Field(30, description="timeout of one request")

    @field_validator("history")
    @classmethod
    def _some_history(cls, value: int) -> int:
        if value < 86400:
            raise ValueError("history must be at least a day")
        return value


PlanType = Literal["pilot", "paid", "none"]


class StaffCost(SpecModel):
    """Staff time per hub as a cost line of the sustainability model: hours per hub per month times the hourly rate."""

    hourly_rate: float = Field(0, ge=0, description="cost of one staff hour (the usage rate card's currency)")
    hours_per_hub: float = Field(0, ge=0, description="staff hours each hub takes per month")
    plan_hours: dict[PlanType, float] = Field(
        default_factory=dict,
        description="hours per month by plan type (`pilot`, `paid`, `none`), over `hours_per_hub`",
    )
    hub_hours: dict[HubName, float] = Field(
        default_factory=dict, description="hours per month of named hubs, over everything else"
    )

    @field_validator("plan_hours", "hub_hours")
    @classmethod
    def _not_negative(cls, hours: dict[str, float]) -> dict[str, float]:
        negative = sorted(name for name, value in hours.items() if value < 0)
        if negative:
            raise ValueError(f"hours cannot be negative: {', '.join(negative)}")
        return hours

    def hours(self, hub: str, plan: PlanType) -> float:
        """Staff hours hub `hub` (of plan type `plan`) takes per month."""
        return self.hub_hours.get(hub, self.plan_hours.get(plan, self.hours_per_hub))


class Organisation(SpecModel):
    """The organisation running the fleet: engineers, the open-source projects it supports, its upstream policy,
    and the staff cost per hub."""

    name: str = Field("", description="the organisation's name, as reports show it")
    engineers: list[Engineer] = Field(default_factory=list, description="engineers whose upstream work is recorded")
    projects: list[KeyProject] = Field(default_factory=list, description="the key open-source projects")
    upstream_target: float = Field(
        0.2, ge=0, le=1, description="policy: share of engineering activity that goes to the key projects"
    )
    github: GitHubSync = Field(default_factory=GitHubSync, description="how the ledger reads GitHub")
    staff: StaffCost = Field(default_factory=StaffCost, description="staff time per hub, for `hubfleet economics`")

    @field_validator("engineers")
    @classmethod
    def _unique_logins(cls, engineers: list[Engineer]) -> list[Engineer]:
        refuse_doubles((e.github.lower() for e in engineers), "an engineer is listed twice")
        return engineers

    @field_validator("projects")
    @classmethod
    def _unique_projects(cls, projects: list[KeyProject]) -> list[KeyProject]:
        refuse_doubles((p.name for p in projects), "project names must be unique")
        for kind in ("repos", "orgs"):
            owners: dict[str, str] = {}
            for project in projects:
                for item in getattr(project, kind):
                    other = owners.setdefault(item.lower(), project.name)
                    if other != project.name:
                        raise ValueError(f"{item} belongs to two projects: {other} and {project.name}")
        return projects

    def engineer(self, login: str) -> Engineer | None:
        """The engineer with GitHub login `login` (case-insensitive)."""
        return next((e for e in self.engineers if e.github.lower() == login.lower()), None)

    def project_of(self, repository: str) -> KeyProject | None:
        """The key project repository `owner/name` belongs to: named by itself first, else by its organisation."""
        repository = repository.lower()
        owner = repository.split("/", 1)[0]
        for project in self.projects:
            if repository in (r.lower() for r in project.repos):
                return project
        return next((p for p in self.projects if owner in (o.lower() for o in p.orgs)), None)
