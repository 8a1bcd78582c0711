"""Alembic's environment for the fleet database: the engine comes from hubfleet.db.migrate()."""

from alembic import context

from hubfleet.db import Base, load_tables

load_tables()  # every room's tables on Base.metadata, for autogenerate

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
