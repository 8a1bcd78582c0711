"""LMS people → hub user names, durably: the key is (issuer, sub), never the e-mail or the name.

The first time a person is seen, a name is derived by the hub's rule (`LTI.username`: the e-mail's local part, the
person's name, or the opaque `sub`), normalised (lower-case ASCII letters, digits and `-`, at most
`MAX_USERNAME` characters). If that name already belongs to somebody else, the person gets the first free
numbered variant (`ada`, `ada2`, `ada3`, …): two people never share a name, and a person keeps theirs even when
their e-mail or name changes later.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hubfleet.edu.lti.services import Member
from hubfleet.edu.lti.tables import Identity

Rule = Literal["email", "name", "sub"]

MAX_USERNAME = 32
MAX_SUFFIX = 10_000
FALLBACK_NAME = "user"


def normalise(text: str, max_length: int = MAX_USERNAME) -> str:
    """`text` as a user name: ASCII (accents dropped), lower case, other characters runs turned into `-`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    name = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    return name[:max_length].rstrip("-")


def derive_username(rule: Rule, *, sub: str, email: str | None = None, name: str | None = None) -> str:
    """The preferred (not yet collision-checked) user name of a person, by `rule`; falls back to the next source
    (e-mail → name → sub) when the preferred one is missing or normalises to nothing."""
    local_part = email.split("@", 1)[0] if email else None
    sources = {"email": [local_part, name, sub], "name": [name, local_part, sub], "sub": [sub]}[rule]
    for source in sources:
        if source:
            candidate = normalise(source)
            if candidate:
                return candidate
    return FALLBACK_NAME


def numbered(base: str, number: int) -> str:
    """`base` with a number appended (1 is `base` itself), shortened so that the result fits `MAX_USERNAME`."""
    if number == 1:
        return base
    suffix = str(number)
    return base[: MAX_USERNAME - len(suffix)].rstrip("-") + suffix


class IdentityStore:
    """The (issuer, sub) → user name table of the fleet database."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def lookup(self, issuer: str, sub: str) -> str | None:
        """The user name of a person already seen, else None."""
        with self.sessions() as session:
            return session.scalar(select(Identity.username).where(Identity.issuer == issuer, Identity.sub == sub))

    def username_for(
        self,
        issuer: str,
        sub: str,
        *,
        email: str | None = None,
        name: str | None = None,
        rule: Rule = "email",
        taken: Callable[[str], bool] | None = None,
    ) -> str:
        """The person's user name: the one they already have, else a new one by `rule`, collision-checked against
        every other person's and against names for which `taken(name)` is true (e.g. the hub's own users)."""
        for _ in range(5):  # another process may claim the same name between our check and our insert
            with self.sessions() as session:
                now = dt.datetime.now(dt.UTC)
                existing = session.scalar(select(Identity).where(Identity.issuer == issuer, Identity.sub == sub))
                if existing is not None:
                    existing.last_seen = now
                    existing.email = email or existing.email
                    existing.name = name or existing.name
                    session.commit()
                    return existing.username
                username = self._free_name(session, derive_username(rule, sub=sub, email=email, name=name), taken)
                session.add(
                    Identity(
                        issuer=issuer, sub=sub, username=username, email=email, name=name, created=now, last_seen=now
                    )
                )
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()
                    continue
                return username
        raise RuntimeError(f"could not record a user name for an LTI identity of {issuer!r}")

    @staticmethod
    def _free_name(session: Session, base: str, taken: Callable[[str], bool] | None) -> str:
        # every numbered variant keeps the base's first 8 characters (names are never cut shorter than 27)
        used = set(session.scalars(select(Identity.username).where(Identity.username.startswith(base[:8]))))
        for number in range(1, MAX_SUFFIX):
            candidate = numbered(base, number)
            if candidate not in used and not (taken and taken(candidate)):
                return candidate
        raise RuntimeError(f"no free user name left for {base!r}")


@dataclass(frozen=True)
class Usernames:
    """The one rule from an LMS person to their hub user name, for launches and roster syncs alike: durable per
    (issuer, sub), derived by the hub's `lti.username` rule, never one of the fleet file's own names."""

    identities: IdentityStore
    rule: Rule
    reserved: frozenset[str]
    """Names no LMS person may get (the fleet file's users of the hub)."""

    async def of(self, issuer: str, sub: str, *, email: str | None, name: str | None) -> str:
        """The hub user name of the person `sub` of the LMS `issuer` (the database is written in a thread)."""
        return await asyncio.to_thread(
            self.identities.username_for,
            issuer,
            sub,
            email=email,
            name=name,
            rule=self.rule,
            taken=self.reserved.__contains__,
        )

    def of_members(self, issuer: str) -> Callable[[Member], Awaitable[str]]:
        """The user names of the members of a roster from the LMS `issuer` (`hubfleet.edu.roster.sync_course`)."""

        def username(member: Member) -> Awaitable[str]:
            return self.of(issuer, member.user_id, email=member.email, name=member.name)

        return username
