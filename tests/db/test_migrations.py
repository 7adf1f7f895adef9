"""Alembic migrations on SQLite and PostgreSQL: round trip, schema, drift, the env var path."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import inspect, pool, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

import proxy.db.models  # noqa: F401  (registers the tables)
from proxy.db import migrate
from proxy.db.base import Base
from proxy.db.migrate import current, downgrade, make_config, upgrade
from proxy.db.session import async_url

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_TABLES = set(Base.metadata.tables)


def head() -> str:
    heads = ScriptDirectory.from_config(make_config()).get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


async def inspect_db(url: str, fn: Any) -> Any:
    """``fn(inspector)`` on a fresh connection."""
    engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: fn(inspect(sync)))
    finally:
        await engine.dispose()


async def table_names(url: str) -> set[str]:
    names: set[str] = await inspect_db(url, lambda inspector: set(inspector.get_table_names()))
    return names


async def check(url: str) -> None:
    """``alembic check``: raises CommandError when the models and the database differ."""
    await asyncio.to_thread(command.check, make_config(url))


def test_single_linear_head() -> None:
    assert head() == "0007"


async def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    assert await asyncio.to_thread(current, database_url) is None

    await asyncio.to_thread(upgrade, database_url)
    assert await asyncio.to_thread(current, database_url) == head()
    assert await table_names(database_url) == MODEL_TABLES | {"alembic_version"}

    await asyncio.to_thread(downgrade, database_url)
    assert await asyncio.to_thread(current, database_url) is None
    assert await table_names(database_url) == {"alembic_version"}

    await asyncio.to_thread(upgrade, database_url)
    assert await asyncio.to_thread(current, database_url) == head()
    assert await table_names(database_url) == MODEL_TABLES | {"alembic_version"}
    await check(database_url)


async def test_no_drift_after_upgrade(migrated_database_url: str) -> None:
    await check(migrated_database_url)


async def test_check_detects_drift(migrated_database_url: str) -> None:
    """``check`` is not vacuous: a missing index is reported."""
    engine = create_async_engine(async_url(migrated_database_url), poolclass=pool.NullPool)
    async with engine.begin() as connection:
        await connection.execute(text("DROP INDEX ix_tasks_app_id"))
    await engine.dispose()
    with pytest.raises(CommandError, match="New upgrade operations detected"):
        await check(migrated_database_url)


async def test_schema_names_follow_the_convention(migrated_database_url: str) -> None:
    def read(inspector: Any) -> dict[str, Any]:
        return {
            "tasks_indexes": {index["name"] for index in inspector.get_indexes("tasks")},
            "messages_indexes": {index["name"] for index in inspector.get_indexes("messages")},
            "events_unique": inspector.get_unique_constraints("callback_events"),
            "keys_unique": inspector.get_unique_constraints("api_keys"),
            "keys_fks": inspector.get_foreign_keys("api_keys"),
            "messages_fks": inspector.get_foreign_keys("messages"),
            "tasks_pk": inspector.get_pk_constraint("tasks"),
            "history_type": next(
                column["type"]
                for column in inspector.get_columns("profiles")
                if column["name"] == "history"
            ),
            "dialect": inspector.dialect.name,
        }

    schema = await inspect_db(migrated_database_url, read)
    assert schema["tasks_indexes"] == {
        "ix_tasks_app_id",
        "ix_tasks_room_id",
        "ix_tasks_user_id",
        "ix_tasks_started_at",
    }
    assert schema["messages_indexes"] == {"ix_messages_task_id", "ix_messages_created_at"}
    assert [(u["name"], u["column_names"]) for u in schema["events_unique"]] == [
        ("uq_callback_events_task_id", ["task_id", "event_type", "event_ms_ts"])
    ]
    assert [u["name"] for u in schema["keys_unique"]] == ["uq_api_keys_key_hash"]
    # Keys may name config-declared profiles: no foreign key to the profiles table.
    assert schema["keys_fks"] == []
    assert [(fk["name"], fk["options"].get("ondelete")) for fk in schema["messages_fks"]] == [
        ("fk_messages_task_id_tasks", "CASCADE")
    ]
    if schema["dialect"] == "postgresql":
        assert schema["tasks_pk"]["name"] == "pk_tasks"
        assert isinstance(schema["history_type"], JSONB)


def test_offline_sql_renders_the_schema(sqlite_url: str) -> None:
    """``alembic upgrade --sql`` (offline mode: no event loop) never touches the database."""
    config = make_config(sqlite_url)
    config.output_buffer = io.StringIO()
    command.upgrade(config, "head", sql=True)
    sql = config.output_buffer.getvalue()
    assert "CREATE TABLE callback_events" in sql
    assert "CREATE INDEX ix_tasks_app_id" in sql
    assert not Path(make_url(sqlite_url).database or "").exists()


async def test_url_defaults_to_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no URL given, env.py uses ``Settings().database_url`` (plain sqlite:// too)."""
    path = tmp_path / "from-settings.db"
    monkeypatch.setenv("PROXY_DATABASE_URL", f"sqlite:///{path}")
    await asyncio.to_thread(upgrade)
    assert await asyncio.to_thread(current) == head()
    assert await table_names(f"sqlite:///{path}") >= MODEL_TABLES


async def test_config_without_alembic_ini(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed without the checkout: ``migrations/`` is found in the working directory."""
    monkeypatch.setattr(migrate, "PROJECT_ROOT", tmp_path / "site-packages")
    monkeypatch.setattr(migrate, "ALEMBIC_INI", tmp_path / "site-packages" / "alembic.ini")
    monkeypatch.chdir(REPO_ROOT)
    config = make_config(sqlite_url)
    assert config.config_file_name is None
    assert Path(config.get_main_option("script_location") or "") == REPO_ROOT / "migrations"
    await asyncio.to_thread(upgrade, sqlite_url)
    assert await asyncio.to_thread(current, sqlite_url) == head()

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="migrations"):
        make_config(sqlite_url)


async def test_cli_main(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(migrate.main, ["--url", sqlite_url]) == 0
    assert f"upgraded base -> {head()}" in capsys.readouterr().out
    assert await asyncio.to_thread(migrate.main, ["--url", sqlite_url]) == 0
    assert f"already at {head()}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        migrate.main(["--url", sqlite_url, "--downgrade"])  # no --revision: refused
    assert await asyncio.to_thread(current, sqlite_url) == head()
    args = ["--url", sqlite_url, "--downgrade", "--revision", "base"]
    assert await asyncio.to_thread(migrate.main, args) == 0
    assert f"downgraded {head()} -> base" in capsys.readouterr().out
    assert await asyncio.to_thread(current, sqlite_url) is None


def test_cli_main_reports_failure(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://nobody:secret@127.0.0.1:1/none"
    assert migrate.main(["--url", url]) == 1
    err = capsys.readouterr().err
    assert "failed" in err
    assert "secret" not in err


# The command line, configured by PROXY_DATABASE_URL alone.


def plain_url(url: str) -> str:
    """``postgresql://`` / ``sqlite://``, as an operator would write it."""
    parsed = make_url(url)
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=False)


def alembic_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name in {"PATH", "HOME", "LANG", "TMPDIR"} or name.startswith("UV_")
    }
    env["PROXY_DATABASE_URL"] = database_url
    if shutil.which("uv"):
        argv = ["uv", "run", "--no-sync", "alembic", *args]
    else:
        argv = [sys.executable, "-m", "alembic", *args]
    return subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=90, check=False
    )


def test_alembic_command_line_with_env_var_only(database_url: str) -> None:
    url = plain_url(database_url)
    upgraded = alembic_cli("upgrade", "head", database_url=url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "Running upgrade  -> 0001" in upgraded.stderr
    assert "Running upgrade 0001 -> 0002" in upgraded.stderr

    checked = alembic_cli("check", database_url=url)
    assert checked.returncode == 0, checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr

    shown = alembic_cli("current", database_url=url)
    assert shown.returncode == 0, shown.stderr
    assert f"{head()} (head)" in shown.stdout
