"""The contribution ledger's tables in the fleet database.

Times are UTC (naive `DateTime`s). Logins and repositories are stored lower-case (GitHub compares them so).
Items of every repository an engineer worked in are kept, key project or not: reports map repositories to key
projects when they run (so a changed project list needs no new sync), and the other items measure the engineer's
whole activity, the denominator of their upstream share.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, DateTime, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hubfleet.db import Base

PULL_REQUEST = "pull_request"
ISSUE = "issue"
REVIEW = "review"
COMMENT = "comment"
RELEASE = "release"
ITEM_KINDS = (PULL_REQUEST, ISSUE, REVIEW, COMMENT, RELEASE)


class Item(Base):
    """One piece of an engineer's work on GitHub: a pull request or issue they opened, a review, a comment on an
    issue or pull request, a release they published."""

    __tablename__ = "upstream_items"
    __table_args__ = (
        UniqueConstraint("kind", "github_id", name="uq_upstream_items_kind_github_id"),
        Index("ix_upstream_items_created", "created_at"),
        Index("ix_upstream_items_login", "login"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # one of ITEM_KINDS
    github_id: Mapped[str] = mapped_column(String(100))  # GitHub's node ID
    login: Mapped[str] = mapped_column(String(64))  # the engineer
    repo: Mapped[str] = mapped_column(String(160))  # owner/name
    number: Mapped[int | None] = mapped_column(Integer, nullable=True)  # of the issue or pull request
    title: Mapped[str] = mapped_column(String(500), default="")
    url: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    merged_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)  # pull requests
    state: Mapped[str] = mapped_column(String(24), default="")  # OPEN/CLOSED/MERGED; a review's APPROVED, …
    additions: Mapped[int] = mapped_column(Integer, default=0)  # pull requests
    deletions: Mapped[int] = mapped_column(Integer, default=0)
    comments: Mapped[int] = mapped_column(Integer, default=0)  # a review's review comments


class NonCode(Base):
    """Work GitHub does not see, recorded with `hubfleet contributions add`: talks, community calls, mentoring,
    docs sprints."""

    __tablename__ = "upstream_noncode"
    __table_args__ = (Index("ix_upstream_noncode_day", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    login: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    day: Mapped[dt.date] = mapped_column(Date)
    hours: Mapped[float] = mapped_column(Float, default=0.0)
    title: Mapped[str] = mapped_column(String(500))
    url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime)


class SyncState(Base):
    """Where the last sync of one stream (an engineer's contributions or comments, releases, an organisation's
    repositories) got to: everything before `synced_until` is in the ledger; `progress` holds the paging of an
    interrupted run (resumed by the next one); `etag` the validator of a conditional request."""

    __tablename__ = "upstream_sync"

    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    synced_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    progress: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    etag: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated: Mapped[dt.datetime] = mapped_column(DateTime)
