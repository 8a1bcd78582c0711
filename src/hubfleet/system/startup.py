"""Faster process starts: optional imports that cost seconds and buy our processes nothing.

`jupyter_events` (imported by JupyterHub and jupyter_server) imports `jsonschema`, which imports `rfc3987_syntax`
when it is installed, to check the `iri` and `iri-reference` string formats — and that module builds a Lark grammar
at import: 1.4 to 2.4 s of CPU on this kind of machine, in every JupyterHub, exchange service and single-user server
start. No schema hubfleet or Jupyter validates uses those formats, and jsonschema checks formats only when asked.
jsonschema imports it inside `suppress(ImportError)`, so marking it absent is safe: those two formats are then not
checked, everything else is unchanged.
"""

from __future__ import annotations

import sys

SLOW_OPTIONAL_MODULES = ("rfc3987_syntax",)


def skip_slow_optional_imports() -> None:
    """Make the slow optional modules above absent for this process (call before importing Jupyter)."""
    for name in SLOW_OPTIONAL_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[assignment]  # `import name` now raises ImportError
