"""Human-friendly quantities in the fleet file: byte sizes ("2G", "512MiB") and durations ("1h", "30m")."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_DURATION_FACTORS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: object) -> int:
    """Bytes from an int or a string such as "512M", "2G", "1.5GiB" (binary units, as Kubernetes' Gi)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512M or 2G, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            number, unit, _ = match.groups()
            return int(float(number) * _SIZE_FACTORS[unit.lower()])
    raise ValueError(f"{value!r} is not a size: use bytes or a number with K, M, G or T (e.g. 512M, 2G)")


def format_size(value: int) -> str:
    """The shortest exact spelling of a byte count ("2G", "1536M", "100")."""
    for unit in ("P", "T", "G", "M", "K"):
        factor = _SIZE_FACTORS[unit.lower()]
        if value and value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def human_size(count: float) -> str:
    """A byte count as a person reads it: "812 B", "3.4 MiB", "1.5 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def parse_duration(value: object) -> int:
    """Seconds from an int or a string such as "90s", "30m", "1h30m", "2d"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30m or 1h, not a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text.isdigit():
            return int(text)
        parts = _DURATION_RE.findall(text)
        if parts and "".join(n + u for n, u in parts).lower() == text.lower():
            return int(sum(float(n) * _DURATION_FACTORS[u.lower()] for n, u in parts))
    raise ValueError(f"{value!r} is not a duration: use seconds or units s, m, h, d, w (e.g. 30m, 1h30m)")


ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[kKmMgGtTpP]?(i?[bB]?)\s*$"},
            ],
            "description": "bytes, or a number with K, M, G, T (binary units), e.g. 512M or 2G",
        }
    ),
]
"""A size in bytes, written in the fleet file as "512M", "2G" or a plain integer."""

Seconds = Annotated[
    int,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^(\d+(\.\d+)?[smhdwSMHDW])+$"},
            ],
            "description": "seconds, or a duration such as 90s, 30m, 1h30m, 2d",
        }
    ),
]
"""A duration in seconds, written in the fleet file as "30m", "1h" or a plain integer."""

NEVER = "never"


def _never_to_none(value: object) -> object:
    return None if isinstance(value, str) and value.strip().lower() == NEVER else value


OrNever = Annotated[
    Seconds | None,
    BeforeValidator(_never_to_none),
    PlainSerializer(lambda value: NEVER if value is None else value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^(\d+(\.\d+)?[smhdwSMHDW])+$"},
                {"const": NEVER},
            ],
            "description": "seconds, a duration such as 30m or 1h, or `never`",
        }
    ),
]
"""A duration that may be `never` (None in the model)."""
