"""The embedded default's SQLite: one process's writers queue on the engine's writer lock, every
transaction serialized as BEGIN IMMEDIATE was, and the lock is let go however a transaction ends."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from linktime.storage import READ_ONLY, make_engine
from sqlalchemy import Engine, text


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE seq (n INTEGER PRIMARY KEY, thread INTEGER)"))
    return engine


def next_number(engine: Engine, thread: int) -> None:
    # Read, then write what was read: lost or refused unless transactions are serialized.
    with engine.begin() as conn:
        last = conn.execute(text("SELECT coalesce(max(n), 0) FROM seq")).scalar_one()
        conn.execute(
            text("INSERT INTO seq (n, thread) VALUES (:n, :t)"), {"n": last + 1, "t": thread}
        )


def test_concurrent_read_then_write_transactions_all_land_in_order(engine: Engine) -> None:
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for _ in range(100):
                next_number(engine, thread)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with engine.connect() as conn:
        numbers = conn.execute(text("SELECT n FROM seq ORDER BY n")).scalars().all()
        by_thread = conn.execute(text("SELECT count(DISTINCT thread) FROM seq")).scalar_one()
    assert numbers == list(range(1, 801))
    assert by_thread == 8


def in_another_thread(engine: Engine) -> bool:
    """Whether another thread gets a write transaction within 5 s."""
    done = threading.Event()

    def write() -> None:
        next_number(engine, 99)
        done.set()

    threading.Thread(target=write, daemon=True).start()
    return done.wait(5)


def test_a_transaction_that_fails_lets_the_next_writer_in(engine: Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(text("INSERT INTO seq (n, thread) VALUES (1000, 0)"))
        raise RuntimeError("the step failed")
    assert in_another_thread(engine)
    with engine.connect() as conn:  # rolled back
        assert conn.execute(text("SELECT n FROM seq")).scalars().all() == [1]


def test_a_connection_dropped_mid_transaction_lets_the_next_writer_in(engine: Engine) -> None:
    conn = engine.connect()
    conn.begin()
    conn.execute(text("INSERT INTO seq (n, thread) VALUES (1000, 0)"))
    conn.invalidate()  # the DBAPI connection is closed with its transaction open
    assert in_another_thread(engine)


def test_a_read_only_connection_reads_while_a_writer_holds_the_lock(engine: Engine) -> None:
    next_number(engine, 0)
    with engine.begin() as writer:
        writer.execute(text("INSERT INTO seq (n, thread) VALUES (2, 0)"))
        seen: list[list[int]] = []
        done = threading.Event()

        def read() -> None:
            with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
                seen.append(list(conn.execute(text("SELECT n FROM seq")).scalars()))
            done.set()

        threading.Thread(target=read, daemon=True).start()
        assert done.wait(5)  # the writer's transaction is still open
    assert seen == [[1]]  # what was committed, not the open transaction's row
