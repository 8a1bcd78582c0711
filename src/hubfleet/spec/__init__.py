"""The fleet file: typed models, loading with precise errors, and the JSON Schema for editors."""

from hubfleet.spec.loader import Problem, SpecError, load, parse
from hubfleet.spec.models import Fleet, Hub, Profile


def json_schema() -> dict:
    """The JSON Schema of the fleet file (for editors and docs)."""
    schema = Fleet.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    # In the file, a hub's name is its key under `hubs:` and its auth may come from `defaults:`.
    hub = schema["$defs"]["Hub"]
    hub["required"] = [key for key in hub.get("required", []) if key not in ("name", "auth")]
    if not hub["required"]:
        del hub["required"]
    name = hub["properties"]["name"]
    schema["properties"]["hubs"]["propertyNames"] = {"pattern": name["pattern"], "description": name["description"]}
    schema["title"] = "hubfleet fleet file"
    return schema


__all__ = ["Fleet", "Hub", "Problem", "Profile", "SpecError", "json_schema", "load", "parse"]
