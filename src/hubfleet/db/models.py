"""Imports every room's table modules so that `Base.metadata` knows all tables (Alembic autogenerate, tests)."""

import hubfleet.edu.exchange.tables
import hubfleet.edu.lti.tables
import hubfleet.upstream.tables
import hubfleet.usage.tables  # noqa: F401
