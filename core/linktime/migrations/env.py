from __future__ import annotations

from alembic import context

from linktime.storage import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode copies a table and drops the old one; with foreign keys enforced, the drop
        # would cascade to every row referring to it. The pragma only takes effect outside a
        # transaction, so it goes to the driver before the migrations' transaction begins (the
        # engine's own BEGIN IMMEDIATE would come first otherwise).
        connection.connection.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if sqlite:
            connection.rollback()
            connection.connection.execute("PRAGMA foreign_keys=ON")
