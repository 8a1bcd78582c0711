"""The fleet-file reference cannot drift from the schema, and documents every key the demo fleet uses."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ruamel.yaml import YAML

from hubfleet.spec import json_schema

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "fleet-file.md"
GENERATOR = ROOT / "docs" / "gen_fleet_reference.py"
DEMO = ROOT / "examples" / "fleet.yaml"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_fleet_reference", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_is_up_to_date(generator: ModuleType) -> None:
    expected = generator.render()
    assert REFERENCE.read_text(encoding="utf-8") == expected, (
        "docs/fleet-file.md is out of date: run .venv/bin/python docs/gen_fleet_reference.py"
    )
    assert generator.main(["--check"]) == 0


def test_the_reference_has_a_section_per_model(generator: ModuleType) -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for name in generator.SECTIONS:
        assert f"\n### {name}\n" in text
    # Every model of the schema is documented (except enums, shown inline as their values).
    models = {name for name, definition in json_schema()["$defs"].items() if "properties" in definition}
    assert models <= set(generator.SECTIONS)


def _resolve(schema: dict[str, Any], defs: dict[str, Any], value: Any) -> dict[str, Any]:
    """The schema that applies to `value`: through $ref, optional values and `type:`-tagged unions."""
    while True:
        if "$ref" in schema:
            schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
        elif "oneOf" in schema:
            tag = value.get("type") if isinstance(value, dict) else None
            mapping = schema.get("discriminator", {}).get("mapping", {})
            schema = {"$ref": mapping[tag]}
        elif "anyOf" in schema:
            options = [o for o in schema["anyOf"] if o.get("type") != "null"]
            schema = options[0] if len(options) == 1 else {}
        else:
            return schema


def _keys_used(value: Any, schema: dict[str, Any], defs: dict[str, Any], at: str, found: dict[str, str]) -> None:
    """Record every fleet-file key in `value` (not the names of hubs, groups and the like)."""
    schema = _resolve(schema, defs, value)
    if isinstance(value, dict):
        for key, item in value.items():
            if "properties" in schema:
                assert key in schema["properties"], f"{at}.{key} is not in the schema"
                found[f"{at}.{key}".lstrip(".")] = key
                _keys_used(item, schema["properties"][key], defs, f"{at}.{key}", found)
            else:  # a mapping of names (hubs, groups, access): the names are data, not keys
                values = schema.get("additionalProperties") or next(iter(schema.get("patternProperties", {}).values()))
                _keys_used(item, values if isinstance(values, dict) else {}, defs, f"{at}.<name>", found)
    elif isinstance(value, list):
        for item in value:
            _keys_used(item, schema.get("items", {}), defs, f"{at}[]", found)


def test_every_key_of_the_demo_fleet_is_documented() -> None:
    data = YAML(typ="safe").load(DEMO.read_text(encoding="utf-8"))
    schema = json_schema()
    found: dict[str, str] = {}
    _keys_used(data, schema, schema["$defs"], "", found)
    keys = set(found.values())
    # The walk really went through the file (hubs, their auth, plans, profiles and shared folders).
    assert {"name", "front_door", "defaults", "hubs", "culling", "timeout", "monthly_budget", "start", "end"} <= keys
    assert {"password", "admins", "allowed_users", "memory", "cpu", "home_quota", "shared", "access"} <= keys
    assert "research" not in keys and "modellers" not in keys
    text = REFERENCE.read_text(encoding="utf-8")
    missing = sorted(f"{path} ({key})" for path, key in found.items() if f"| `{key}` |" not in text)
    assert missing == []


TEMPLATES_DOC = ROOT / "docs" / "templates.md"


def test_the_templates_guide_covers_every_template_and_its_examples_are_valid(tmp_path: Path) -> None:
    from hubfleet.spec import parse, templates

    text = TEMPLATES_DOC.read_text(encoding="utf-8")
    for name in templates.names():
        assert f"`{name}`" in text
    assert "hubfleet template show" in text and "hubfleet template list" in text
    assert "(docs/templates.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    examples = [block.split("```", 1)[0] for block in text.split("```yaml\n")[1:]]
    assert len(examples) >= 4
    for name in ("github-secret", "research-password"):
        (tmp_path / name).write_text("a-long-enough-secret\n")
    for example in examples:
        parse(example, tmp_path / "fleet.yaml")  # raises SpecError with the problems
