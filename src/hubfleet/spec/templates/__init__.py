"""Community templates: partial hubs shipped as YAML files beside this module, one per `Template` name.

A template holds the same keys as a hub in the fleet file, plus a one-line `description:`. The loader merges it
under the fleet's `defaults:` and the hub's own settings (template < defaults < hub), so a hub gets the
template's profiles, storage, culling and Dask settings unless it says otherwise.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

TEMPLATE_DIR = Path(__file__).resolve().parent
"""Where the template files are (`<name>.yaml`)."""

DEFAULT = "generic"
"""The template of a hub that names none (and whose fleet's `defaults:` name none)."""

DESCRIPTION_KEY = "description"
"""The template's one-line description: shown by `hubfleet template list`, never merged into a hub."""

FORBIDDEN_KEYS = frozenset({"name", "template"})
"""Hub keys a template cannot set: a hub's name is its key, and a template cannot choose another template."""


@dataclass(frozen=True)
class CommunityTemplate:
    """One community template as shipped."""

    name: str
    description: str
    text: str
    """The file as written, comments included."""
    hub: dict[str, Any]
    """The partial hub it provides (the file's keys but `description`)."""

    def hub_text(self) -> str:
        """The file without its `description:` line: hub keys, ready to copy into a hub of a fleet file."""
        lines = self.text.splitlines(keepends=True)
        return "".join(line for line in lines if not line.startswith(f"{DESCRIPTION_KEY}:"))


class UnknownTemplate(KeyError):
    """No template has this name."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"no template {self.name!r} (templates: {', '.join(names())})"


def names() -> list[str]:
    """The names of the shipped templates, sorted."""
    return list(_names())


@functools.cache
def _names() -> tuple[str, ...]:
    return tuple(sorted(path.stem for path in TEMPLATE_DIR.glob("*.yaml")))


@functools.cache
def _read(name: str) -> CommunityTemplate:
    path = TEMPLATE_DIR / f"{name}.yaml"
    text = path.read_text(encoding="utf-8")
    data = YAML(typ="safe").load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"template {path} must be a mapping of hub keys")
    description = data.pop(DESCRIPTION_KEY, "")
    if not isinstance(description, str) or "\n" in description.strip():
        raise ValueError(f"template {path}: description must be one line of text")
    forbidden = sorted(FORBIDDEN_KEYS & set(data))
    if forbidden:
        raise ValueError(f"template {path} sets {', '.join(forbidden)}: a template cannot")
    return CommunityTemplate(name=name, description=description.strip(), text=text, hub=data)


def get(name: str) -> CommunityTemplate:
    """The template called `name` (`UnknownTemplate` otherwise)."""
    if not isinstance(name, str) or name not in _names():
        raise UnknownTemplate(str(name))
    return _read(name)


def hub_data(name: object) -> dict[str, Any] | None:
    """A fresh copy of the partial hub template `name` provides; None for a name no template has."""
    if not isinstance(name, str) or name not in _names():
        return None
    return copy.deepcopy(_read(name).hub)
