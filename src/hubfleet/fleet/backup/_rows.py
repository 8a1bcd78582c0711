"""One hub's rows of the fleet database, found through the tables' own metadata: rows of tables with a `hub`
column, the rows that refer to them (submissions of its assignments, …) and the rows they refer to (file blobs).
Written as JSON, read back with new ids where ids are numbers the database hands out, and removed."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections import defaultdict
from typing import Any

from sqlalchemy import Integer, Table, delete, insert, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from hubfleet import db


def _tables() -> list[Table]:
    db.load_tables()
    return list(db.Base.metadata.sorted_tables)


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$d": value.isoformat()}
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode()}
    return value


def _decode(value: dict) -> Any:
    if "$dt" in value:
        return dt.datetime.fromisoformat(value["$dt"])
    if "$d" in value:
        return dt.date.fromisoformat(value["$d"])
    if "$b" in value:
        return base64.b64decode(value["$b"])
    return value


def _select(session: Session, hub: str) -> dict[str, list[dict]]:
    """Table name → the hub's rows, parents before children; then the rows the hub's rows refer to."""
    tables = _tables()
    chosen: dict[str, list[dict]] = {}
    for table in tables:
        if "hub" in table.c:
            rows = session.execute(select(table).where(table.c.hub == hub)).mappings().all()
        else:
            links = [fk for fk in table.foreign_keys if fk.column.table.name in chosen]
            if not links:
                continue
            fk = links[0]
            keys = [row[fk.column.name] for row in chosen[fk.column.table.name]]
            rows = session.execute(select(table).where(fk.parent.in_(keys))).mappings().all() if keys else []
        chosen[table.name] = [dict(row) for row in rows]
    for table in tables:
        if table.name in chosen:
            continue
        wanted = {
            row[fk.parent.name]
            for child in tables
            if child.name in chosen
            for fk in child.foreign_keys
            if fk.column.table is table
            for row in chosen[child.name]
        }
        if wanted:
            key = next(iter(table.primary_key.columns))
            rows = session.execute(select(table).where(key.in_(sorted(wanted)))).mappings().all()
            chosen[table.name] = [dict(row) for row in rows]
    return {name: rows for name, rows in chosen.items() if rows}


def export_rows(sessions: sessionmaker[Session], hub: str) -> str:
    """The hub's rows as JSON text."""
    with sessions() as session:
        chosen = _select(session, hub)
    return json.dumps(
        {name: [{k: _encode(v) for k, v in row.items()} for row in rows] for name, rows in chosen.items()}
    )


def import_rows(sessions: sessionmaker[Session], text: str) -> int:
    """Insert rows written by `export_rows`; numeric ids get new values (children follow); a referenced row that
    is already there (a file blob by its checksum) is kept. Returns the rows inserted."""
    data = json.loads(text, object_hook=_decode)
    renumbered: dict[str, dict[Any, Any]] = defaultdict(dict)
    inserted = 0
    with sessions.begin() as session:
        for table in _tables():
            rows = data.get(table.name, [])
            keys = list(table.primary_key.columns)
            numbered = len(keys) == 1 and isinstance(keys[0].type, Integer)
            for row in rows:
                for fk in table.foreign_keys:
                    mapping = renumbered.get(fk.column.table.name)
                    if mapping and row.get(fk.parent.name) in mapping:
                        row[fk.parent.name] = mapping[row[fk.parent.name]]
                if "hub" not in table.c and not table.foreign_keys:
                    # A shared row (a blob): keep the one already there.
                    key = keys[0]
                    if session.execute(select(key).where(key == row[key.name])).first() is not None:
                        continue
                if numbered:
                    old = row.pop(keys[0].name)
                    new = session.execute(insert(table).values(**row).returning(keys[0])).scalar_one()
                    renumbered[table.name][old] = new
                else:
                    session.execute(insert(table).values(**row))
                inserted += 1
    return inserted


def delete_rows(sessions: sessionmaker[Session], hub: str) -> int:
    """Remove the hub's rows (children first); rows others may share (file blobs) stay. Returns how many."""
    removed = 0
    with sessions.begin() as session:
        chosen = _select(session, hub)
        for table in reversed(_tables()):
            rows = chosen.get(table.name)
            if not rows or ("hub" not in table.c and not table.foreign_keys):
                continue
            keys = list(table.primary_key.columns)
            values = [tuple(row[key.name] for key in keys) for row in rows]
            removed += session.execute(delete(table).where(tuple_(*keys).in_(values))).rowcount
    return removed
