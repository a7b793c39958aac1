"""Alembic migrations, applied by ``linktime db upgrade`` (and at ``serve`` start)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config

HERE = Path(__file__).parent
# The newest revision in versions/ (a test holds it to Alembic's own head): a database already
# there is not handed to Alembic, which a process then never imports (the embedded default's
# memory, issue 17).
HEAD = "0013"


def config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["engine"] = engine
    return cfg


def at_head(engine: Engine) -> bool:
    """Whether the database is at ``HEAD`` (False when it has no version table yet)."""
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
            return list(versions) == [HEAD]
    except DBAPIError:  # no alembic_version table: a new database
        return False


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(config(engine), revision)
