"""The fleet file: typed models, loading with precise errors, and the JSON Schema for editors."""

from hubfleet.spec.loader import Problem, SpecError, load, parse
from hubfleet.spec.models import Fleet, Hub, Profile


def json_schema() -> dict:
    """The JSON Schema of the fleet file (for editors and docs)."""
    schema = Fleet.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hubfleet fleet file"
    return schema


__all__ = ["Fleet", "Hub", "Problem", "Profile", "SpecError", "json_schema", "load", "parse"]
