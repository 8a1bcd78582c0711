"""Building blocks every fleet-file model shares: the base model and constrained names."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

HubName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z]([a-z0-9-]{0,18}[a-z0-9])?$"),
    Field(description="DNS-safe: lower-case letters, digits and '-', starting with a letter, at most 20 characters"),
]
Slug = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([a-z0-9_-]{0,30}[a-z0-9])?$"),
    Field(description="lower-case letters, digits, '-' and '_', at most 32 characters"),
]
Username = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[^\s/:,]+$"),
    Field(description="a JupyterHub user name (no spaces, '/', ':' or ',')"),
]


class SpecModel(BaseModel):
    """Base of every fleet-file model: unknown keys are errors, models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def refuse_doubles(names: Iterable[str], problem: str) -> None:
    """Refuse names given more than once: a ValueError saying `problem`, then those names."""
    doubled = sorted(name for name, count in Counter(names).items() if count > 1)
    if doubled:
        raise ValueError(f"{problem}: {', '.join(doubled)}")
