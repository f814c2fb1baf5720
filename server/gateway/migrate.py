"""Bringing a database made by an earlier version up to date (``Database`` runs it on start)."""

from __future__ import annotations

from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Engine


def add_new_columns(engine: Engine, metadata: MetaData) -> None:
    """Bring a database made by an earlier version up to date. ``create_all`` makes missing tables
    but never touches existing ones; every column added since is nullable, so an ``ALTER TABLE
    … ADD COLUMN`` is the whole migration (a migration framework would be more machinery than
    this additive history needs)."""
    have = inspect(engine)
    for table in metadata.sorted_tables:
        if not have.has_table(table.name):
            continue
        present = {c["name"] for c in have.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                kind = column.type.compile(dialect=engine.dialect)
                with engine.begin() as conn:
                    conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
                    for statement in _BACKFILL.get((table.name, column.name), ()):
                        conn.execute(text(statement))


# Values for the rows a new column finds, where they can be told from the row. A generation's API
# was its route until the API was recorded; these are the four routes of that time.
_BACKFILL = {
    ("generations", "api"): (
        "UPDATE generations SET api = 'responses' WHERE route LIKE '%/responses'",
        "UPDATE generations SET api = 'messages' WHERE route LIKE '%/messages'",
        "UPDATE generations SET api = 'chat' WHERE route LIKE '%/chat/completions'",
        "UPDATE generations SET api = 'completions' WHERE api IS NULL AND route LIKE '%/completions'",
    )
}
