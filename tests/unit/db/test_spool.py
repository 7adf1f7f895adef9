"""The write-behind spool: durable order, one slot per live process, orphans adopted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proxy.db.spool import MAX_SLOTS, Spool, SpoolError, spool_directory


def test_append_read_delete_keep_submission_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path).open()
    ids = [spool.append("transcript", f"row {n}".encode()) for n in range(5)]
    spool.append("callback_event", b"event")
    assert ids == sorted(ids)
    assert [body for _, body in spool.read("transcript", 0, 10)] == [
        f"row {n}".encode() for n in range(5)
    ]
    assert [body for _, body in spool.read("transcript", ids[2], 10)] == [b"row 3", b"row 4"]
    spool.delete(ids[:3])
    assert (spool.count("transcript"), spool.count("callback_event")) == (2, 1)
    spool.close()


def test_a_second_process_takes_another_slot(tmp_path: Path) -> None:
    first, second = Spool(tmp_path).open(), Spool(tmp_path).open()
    assert first.path is not None and second.path is not None
    assert (first.path.name, second.path.name) == ("slot-0.sqlite3", "slot-1.sqlite3")
    first.close()
    second.close()


def test_rows_of_a_killed_process_are_adopted_by_the_next_one(tmp_path: Path) -> None:
    # A real process spools three rows and dies by SIGKILL without deleting them.
    script = textwrap.dedent(
        f"""
        import os, signal
        from proxy.db.spool import Spool
        spool = Spool({str(tmp_path)!r}).open()
        for n in range(3):
            spool.append("transcript", b"row %d" % n)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=30)
    assert result.returncode == -9
    holder = Spool(tmp_path).open()  # takes slot 0 again: its own rows, not adopted
    assert holder.count("transcript") == 3 and holder.adopted == 0
    other = Spool(tmp_path).open()  # slot 1; slot 0 is held, so nothing to adopt
    assert other.count("transcript") == 0 and other.adopted == 0
    holder.close()
    third = Spool(tmp_path).open()  # slot 0 is free again: its rows are adopted once
    assert third.path is not None and third.path.name == "slot-0.sqlite3"
    other.close()
    fourth = Spool(tmp_path).open()  # slot 1 free, slot 0 held by ``third``
    assert third.count("transcript") == 3
    assert fourth.count("transcript") == 0
    third.close()
    fourth.close()


def test_orphan_slot_rows_move_to_the_live_slot(tmp_path: Path) -> None:
    a, b = Spool(tmp_path).open(), Spool(tmp_path).open()
    b.append("transcript", b"left behind")
    b.close()  # b's process is gone; its slot-1 file keeps the row
    a.close()
    survivor = Spool(tmp_path).open()  # slot 0; adopts slot 1
    assert survivor.adopted == 1
    assert [body for _, body in survivor.read("transcript", 0, 10)] == [b"left behind"]
    survivor.close()
    again = Spool(tmp_path).open()
    assert again.adopted == 0 and again.count("transcript") == 1  # moved, not copied
    again.close()


def test_no_free_slot_is_an_error(tmp_path: Path) -> None:
    held = [Spool(tmp_path).open() for _ in range(MAX_SLOTS)]
    with pytest.raises(SpoolError, match="slots"):
        Spool(tmp_path).open()
    for spool in held:
        spool.close()


def test_directory_per_database(tmp_path: Path) -> None:
    sqlite = spool_directory(None, f"sqlite+aiosqlite:///{tmp_path}/a.db")
    assert sqlite is not None and sqlite.parent == tmp_path / "proxy-spool"
    pg_one = spool_directory("/var/spool", "postgresql+asyncpg://u:secret@db/one")
    pg_two = spool_directory("/var/spool", "postgresql+asyncpg://u:other@db/two")
    assert pg_one is not None and pg_two is not None
    assert pg_one.parent == Path("/var/spool") and pg_one != pg_two
    assert "secret" not in str(pg_one)
    assert spool_directory("off", "sqlite:///x.db") is None
