"""Load a fleet file into a `Fleet`, reporting every problem at once with file:line:column, field path and hint."""

from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from hubfleet.spec import templates
from hubfleet.spec.auth import SECRET_FILE_FIELDS
from hubfleet.spec.environments import Environment
from hubfleet.spec.models import Fleet, Hub, HubName, Slug, Username

_PATTERN_HINTS = {
    typing.get_args(alias)[1].pattern: typing.get_args(alias)[2].description for alias in (HubName, Slug, Username)
}

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a fleet file."""

    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return f"{text}\n    hint: {self.hint}" if self.hint else text


class SpecError(Exception):
    """A fleet file that cannot be used; `problems` lists every reason."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        count = len(self.problems)
        header = f"{count} problem{'s' if count != 1 else ''} in the fleet file"
        super().__init__(header + ":\n" + "\n".join(str(p) for p in self.problems))


_OPENED_HERE = {
    "while parsing a flow mapping": "the '{' here is never closed (a ',' or '}' is missing)",
    "while parsing a flow sequence": "the '[' here is never closed (a ',' or ']' is missing)",
    "while scanning a quoted scalar": "the quote here is never closed",
    "while scanning a simple key": "a key here has no ':' after it",
}
"""Errors the parser finds only further on, about something opened earlier: the line where it was opened."""


def _plain_yaml_error(context: str, problem: str) -> tuple[str, str | None]:
    """Where a YAML syntax error really is ('context': where something was opened, else 'problem': where the
    parser stopped) and what it is in plain words (None: no better words than the parser's)."""
    if context in _OPENED_HERE:
        return "context", _OPENED_HERE[context]
    if problem.startswith("mapping values are not allowed"):
        return "problem", (
            "a ':' followed by a space or the line's end inside a value — quote the value (\"…\"), or check the line "
            "above for a key without its ':'"
        )
    if "cannot start any token" in problem and "\\t" in problem:
        return "problem", "a tab character: YAML indents with spaces only"
    if context.startswith("while parsing a block") and problem.startswith("expected <block end>"):
        found = problem.rpartition("but found ")[2]
        if found in ("'}'", "']'"):
            return "problem", f"a {found} that closes nothing"
        return "problem", "this line's indentation does not fit the lines above (keys of one mapping, and the '-' of "
        "one list, start in the same column)"
    if problem.startswith("found undefined alias"):
        return "problem", f"{problem.rpartition(' ')[2]} refers to no anchor (&name) defined above it"
    return "problem", None


class FleetDocument:
    """The parsed YAML of a fleet file, with the position of every key and value."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.file = str(path)
        yaml = YAML(typ="rt")
        yaml.allow_duplicate_keys = False
        try:
            self.root: Any = yaml.load(text)
        except DuplicateKeyError as exc:
            raise SpecError([self._duplicate_problem(exc)]) from None
        except MarkedYAMLError as exc:
            raise SpecError([self._yaml_problem(exc, "this is not valid YAML")]) from None
        except YAMLError as exc:
            raise SpecError([Problem(self.file, 1, 1, "", f"this is not valid YAML: {exc}")]) from None
        if self.root is None:
            raise SpecError([Problem(self.file, 1, 1, "", "the fleet file is empty", "start from examples/fleet.yaml")])
        if not isinstance(self.root, CommentedMap):
            raise SpecError(
                [
                    Problem(
                        self.file,
                        1,
                        1,
                        "",
                        "the fleet file must be a mapping (name:, hubs:, …) at the top level",
                    )
                ]
            )

    def _yaml_problem(self, exc: MarkedYAMLError, summary: str) -> Problem:
        detail = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        where, words = _plain_yaml_error(str(exc.context or ""), str(exc.problem or ""))
        mark = (exc.context_mark if where == "context" else None) or exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        if words is None:
            return Problem(self.file, line, column, "", f"{summary}: {detail}".rstrip(": "))
        return Problem(self.file, line, column, "", f"{summary}: {words}", f"the YAML parser says: {detail}")

    def _duplicate_problem(self, exc: DuplicateKeyError) -> Problem:
        # ruamel's message repeats both values, which for a hub is the whole hub: name the key instead.
        match = re.match(r'found duplicate key "(.*?)" with value', str(exc.problem or ""))
        if match is None or exc.problem_mark is None:
            return self._yaml_problem(exc, "a key appears twice in the same mapping")
        mark = exc.problem_mark
        return Problem(
            self.file,
            mark.line + 1,
            mark.column + 1,
            "",
            f"the key '{match[1]}' appears twice in the same mapping",
            "keep only one of them: YAML does not merge repeated keys",
        )

    def node(self, loc: Loc) -> Any:
        """The YAML node at `loc`, or None when it is not in the file."""
        node = self.root
        for step in loc:
            if not _has(node, step):
                return None
            node = node[step]
        return node

    def position(self, loc: Loc, *, key: bool = False) -> tuple[int, int, bool]:
        """1-based (line, column) of the deepest part of `loc` present in the file, and whether all of it was.

        `loc` must not hold pydantic's union tags (see `_without_tags`): they are not in the document.
        """
        node = self.root
        line, column = 1, 1
        found_all = True
        for index, step in enumerate(loc):
            last = index == len(loc) - 1
            if isinstance(node, CommentedMap) and step in node:
                row, col = node.lc.key(step) if (key and last) else node.lc.value(step)
                line, column = row + 1, col + 1
                node = node[step]
            elif isinstance(node, CommentedSeq) and isinstance(step, int) and 0 <= step < len(node):
                row, col = node.lc.item(step)
                line, column = row + 1, col + 1
                node = node[step]
            else:
                found_all = False
                break
        return line, column, found_all


def _has(node: Any, step: str | int) -> bool:
    if isinstance(node, CommentedMap):
        return step in node
    return isinstance(node, CommentedSeq) and isinstance(step, int) and 0 <= step < len(node)


def _deep_merge(base: Any, override: Any) -> Any:
    """`override` laid over `base`: mappings merge key by key, anything else replaces.

    A mapping with another `type:` (auth, plan) replaces the base: the keys of one type mean nothing to another.
    """
    if isinstance(base, dict) and isinstance(override, dict):
        tags = base.get("type"), override.get("type")
        if all(isinstance(tag, str) for tag in tags) and tags[0] != tags[1]:
            return override
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _deep_merge(base[key], value) if key in base else value
        return merged
    return override


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists."""
    if isinstance(node, dict):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(value) for value in node]
    return node


def _model_fields_at(loc: Loc) -> list[str]:
    """The keys the fleet model accepts at `loc` (for "did you mean" hints)."""
    annotation: Any = Fleet
    for step in loc:
        annotation = _step_into(annotation, step)
        if annotation is None:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _step_into(annotation: Any, step: str | int) -> Any:
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(step))
        return field.annotation if field else None
    if origin is dict:
        return typing.get_args(annotation)[1]
    if origin is list:
        return typing.get_args(annotation)[0]
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            member = _unwrap(member)
            if isinstance(member, type) and issubclass(member, BaseModel):
                tag = member.model_fields.get("type")
                if tag is not None and step in typing.get_args(tag.annotation):
                    return member
    return None


def _union_tags(annotation: Any) -> list[str]:
    """The `type:` tags of a discriminated union of models ([] for anything else)."""
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return []
    tags = []
    for member in typing.get_args(annotation):
        member = _unwrap(member)
        if isinstance(member, type) and issubclass(member, BaseModel) and "type" in member.model_fields:
            tags.extend(typing.get_args(member.model_fields["type"].annotation))
    return tags


def _annotation_at(loc: Loc) -> Any:
    """The fleet model's annotation at `loc` (None when the model does not describe it)."""
    annotation: Any = Fleet
    for step in loc:
        annotation = _step_into(annotation, step)
        if annotation is None:
            return None
    return annotation


def _without_tags(loc: Loc) -> Loc:
    """`loc` without pydantic's union tags (`hubs.a.auth.shared-password.password`): they are not in the file."""
    annotation: Any = Fleet
    kept: list[str | int] = []
    for index, step in enumerate(loc):
        if annotation is None:
            kept.extend(loc[index:])
            break
        is_tag = isinstance(step, str) and step in _union_tags(annotation)
        annotation = _step_into(annotation, step)
        if not is_tag:
            kept.append(step)
    return tuple(kept)


def _names_a_key(loc: Loc) -> bool:
    """Whether the last step of `loc` is a key of a mapping of names (a group, a folder's access) in the file."""
    return bool(loc) and isinstance(loc[-1], str) and typing.get_origin(_unwrap(_annotation_at(loc[:-1]))) is dict


def _hint(error: dict[str, Any], loc: Loc) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _model_fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        if close:
            return f"did you mean '{close[0]}'?"
        key = str(loc[-1])
        in_a_hub = (len(loc) == 3 and loc[0] == "hubs") or (len(loc) == 2 and loc[0] == "defaults")
        if in_a_hub and key in Fleet.model_fields:
            return f"'{key}' is a setting of the whole fleet: move it to the top level of the file"
        if len(loc) == 1 and key in Hub.model_fields:
            return f"'{key}' is a hub's setting: put it under a hub (hubs: NAME:) or under defaults: for every hub"
        return f"allowed keys here: {', '.join(allowed)}" if allowed else ""
    if kind == "missing":
        return f"add '{loc[-1]}:' here"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = _union_tags(_annotation_at(loc[:-1] if kind == "union_tag_invalid" else loc))
        return f"set 'type:' to one of {', '.join(repr(t) for t in tags)}" if tags else ""
    if kind == "string_pattern_mismatch":
        return _PATTERN_HINTS.get(error.get("ctx", {}).get("pattern", ""), "")
    return ""


def _message(error: dict[str, Any], loc: Loc) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{loc[-1]}'"
    if kind == "missing":
        return f"required key '{loc[-1]}' is missing"
    if kind == "string_pattern_mismatch":
        return f"{error['input']!r} is not allowed here"
    if kind == "union_tag_invalid":
        return f"unknown type {error.get('ctx', {}).get('tag', '')!r}"
    if kind == "union_tag_not_found":
        return "required key 'type' is missing"
    message = error["msg"]
    return message.removeprefix("Value error, ")


def _dotted(loc: Iterable[str | int]) -> str:
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text


@dataclass(frozen=True)
class _TemplateUse:
    """The template a hub was built on, and where the file chooses it."""

    name: str
    data: dict[str, Any]
    chosen_at: Loc
    """The hub's `template:`, else `defaults.template`, else the hub's key (the default template)."""


def _present(data: Any, loc: Loc) -> bool:
    """Whether plain `data` holds something at `loc`."""
    for step in loc:
        in_map = isinstance(data, dict) and step in data
        in_list = isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data)
        if not (in_map or in_list):
            return False
        data = data[step]
    return True


class _Reporter:
    """Turns locations in the (merged) data into problems pointing at the right place in the file."""

    def __init__(self, doc: FleetDocument):
        self.doc = doc
        self.problems: list[Problem] = []
        # (line, column, message) → the problem's index, and the hubs inheriting it from `defaults:` (if so).
        self._seen: dict[tuple[int, int, str], tuple[int, list[str] | None]] = {}
        self.templates: dict[str, _TemplateUse] = {}
        """Hub name → the template merged under it."""

    def add(self, loc: Loc, message: str, hint: str = "", *, key: bool = False) -> None:
        loc = shown = _without_tags(loc)
        if loc[:1] == ("hubs",) and loc[2:] == ("name",) and self.doc.node(loc) is None:
            loc, key = loc[:2], True  # the name comes from the hub's key
        line, column, found = self.doc.position(loc, key=key)
        inherited_by: str | None = None
        if not found and len(loc) > 2 and loc[0] == "hubs":
            # The value may come from `defaults:` rather than from the hub itself: report it once, there.
            d_loc = ("defaults", *loc[2:])
            d_line, d_column, d_found = self.doc.position(d_loc, key=key)
            template = self.templates.get(str(loc[1]))
            if d_found:
                line, column, shown, inherited_by = d_line, d_column, d_loc, str(loc[1])
            elif template is not None and _present(template.data, loc[2:]):
                # From the hub's template, which is not in this file: point at where the file chooses it.
                line, column, _ = self.doc.position(template.chosen_at, key=template.chosen_at[-1] != "template")
                message = f"{message} (from template '{template.name}')"
                hint = (
                    hint or f"set it in the hub to override the template (see `hubfleet template show {template.name}`)"
                )
        signature = (line, column, message)
        if signature in self._seen:
            index, hubs = self._seen[signature]
            if inherited_by is not None and hubs is not None and inherited_by not in hubs:
                hubs.append(inherited_by)
                self.problems[index] = replace(self.problems[index], message=_inherited(message, hubs))
            return
        hubs = [inherited_by] if inherited_by is not None else None
        self._seen[signature] = (len(self.problems), hubs)
        shown_message = _inherited(message, hubs) if hubs else message
        self.problems.append(Problem(self.doc.file, line, column, _dotted(shown), shown_message, hint))


def _inherited(message: str, hubs: list[str]) -> str:
    return f"{message} (inherited from defaults by hub{'s' if len(hubs) > 1 else ''} {', '.join(hubs)})"


def load(path: str | Path) -> Fleet:
    """Read and validate a fleet file. Raises `SpecError` listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([Problem(str(path), 1, 1, "", f"cannot read the fleet file: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise SpecError([Problem(str(path), 1, 1, "", "the fleet file is not UTF-8 text")]) from None
    return parse(text, path)


def parse(text: str, path: Path = Path("fleet.yaml")) -> Fleet:
    """Validate fleet-file text; `path` names it in messages and anchors relative paths."""
    from hubfleet.spec.checks import cross_check, cross_check_parts

    doc = FleetDocument(path, text)
    reporter = _Reporter(doc)
    data = _merged_data(doc, reporter)
    fleet: Fleet | None = None
    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            key = error["type"] == "extra_forbidden"
            where = (*loc, "type") if error["type"] == "union_tag_invalid" else loc
            reporter.add(where, _message(error, loc), _hint(error, where), key=key)
    # Cross checks run even when some parts are invalid, on the parts that are valid, so that every problem
    # is reported at once.
    findings = cross_check(fleet, path.parent) if fleet is not None else cross_check_parts(data, path.parent)
    for loc, message, hint in findings:
        reporter.add(loc, message, hint, key=_names_a_key(loc))
    if reporter.problems:
        raise SpecError(sorted(reporter.problems, key=lambda p: (p.line, p.column)))
    assert fleet is not None
    return _anchored(fleet, path.parent)


def _merged_data(doc: FleetDocument, reporter: _Reporter) -> dict[str, Any]:
    """Plain data for validation: each hub gets its name from its key, with its template and `defaults:` merged
    under it (template < defaults < hub: mappings merge key by key, anything else replaces)."""
    data = _plain(doc.root)
    defaults = data.get("defaults") or {}
    hubs = data.get("hubs")
    if isinstance(hubs, dict) and isinstance(defaults, dict):
        merged = {}
        for name, hub in hubs.items():
            if not isinstance(hub, dict):
                merged[name] = hub
                continue
            if "name" in hub and hub["name"] != name:
                reporter.add(
                    ("hubs", name, "name"),
                    f"the hub's name '{hub['name']}' differs from its key '{name}'",
                    "drop 'name:' — the key under hubs: is the name",
                )
            hub = {**hub, "name": name}
            base = copy.deepcopy(defaults)
            template = _template_of(name, hub, defaults)
            if template is not None:
                reporter.templates[name] = template
                base = _deep_merge(copy.deepcopy(template.data), base)
            merged[name] = _deep_merge(base, hub)
        data["hubs"] = merged
    return data


def _template_of(name: str, hub: dict[str, Any], defaults: dict[str, Any]) -> _TemplateUse | None:
    """The template hub `name` is built on: its own `template:`, else `defaults.template`, else the default one.

    None for a name no template has: validating the hub's `template:` reports it.
    """
    if "template" in hub:
        chosen, at = hub["template"], ("hubs", name, "template")
    elif "template" in defaults:
        chosen, at = defaults["template"], ("defaults", "template")
    else:
        chosen, at = templates.DEFAULT, ("hubs", name)
    data = templates.hub_data(chosen)
    return None if data is None else _TemplateUse(str(chosen), data, at)


def _anchored(fleet: Fleet, base_dir: Path) -> Fleet:
    """Relative paths in the fleet file are relative to the file's directory."""
    base_dir = base_dir.resolve()
    updates: dict[str, Any] = {}
    if fleet.state_dir is not None and not fleet.state_dir.is_absolute():
        updates["state_dir"] = base_dir / fleet.state_dir
    hubs = {}
    for name, hub in fleet.hubs.items():
        auth = hub.auth
        for field in (*SECRET_FILE_FIELDS, "ca_file"):
            value = getattr(auth, field, None)
            if value is not None and not value.is_absolute():
                auth = auth.model_copy(update={field: base_dir / value})
        environments = {key: _anchored_environment(env, base_dir) for key, env in hub.environments.items()}
        hubs[name] = hub.model_copy(update={"auth": auth, "environments": environments})
    updates["hubs"] = hubs
    updates["environments"] = {key: _anchored_environment(env, base_dir) for key, env in fleet.environments.items()}
    tls = fleet.front_door.tls
    if tls is not None:
        files = {
            field: base_dir / value
            for field in ("cert_file", "key_file")
            if (value := getattr(tls, field)) is not None and not value.is_absolute()
        }
        if tls.acme is not None and tls.acme.ca_file is not None and not tls.acme.ca_file.is_absolute():
            files["acme"] = tls.acme.model_copy(update={"ca_file": base_dir / tls.acme.ca_file})
        updates["front_door"] = fleet.front_door.model_copy(update={"tls": tls.model_copy(update=files)})
    github = fleet.organisation.github
    if github.token_file is not None and not github.token_file.is_absolute():
        github = github.model_copy(update={"token_file": base_dir / github.token_file})
        updates["organisation"] = fleet.organisation.model_copy(update={"github": github})
    return fleet.model_copy(update=updates)


def _anchored_environment(env: Environment, base_dir: Path) -> Environment:
    updates = {
        field: base_dir / value
        for field in ("requirements_file", "lock_file")
        if (value := getattr(env, field)) is not None and not value.is_absolute()
    }
    return env.model_copy(update=updates) if updates else env
