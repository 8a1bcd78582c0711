"""LTI's table in the fleet database: the durable link from an LMS person (issuer, sub) to a hub user name."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hubfleet.db import Base


class Identity(Base):
    """One person of one LMS, and the user name they have on the fleet's hubs (never given to anyone else)."""

    __tablename__ = "lti_identities"
    __table_args__ = (
        UniqueConstraint("issuer", "sub", name="uq_lti_identities_issuer_sub"),
        UniqueConstraint("username", name="uq_lti_identities_username"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    issuer: Mapped[str] = mapped_column(String(255))
    sub: Mapped[str] = mapped_column(String(255))
    username: Mapped[str] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(255), nullable=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
