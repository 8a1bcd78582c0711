"""Imports every room's table modules so that `Base.metadata` knows all tables (Alembic autogenerate, tests)."""
