"""``proxy keys | profiles | tasks`` against a migrated SQLite database."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from proxy.cli_admin import keys_main, profiles_main, tasks_main
from proxy.db.models import ApiKey, Task, TranscriptMessage
from proxy.db.repositories import hash_key
from tests.api.conftest import in_database


@pytest.fixture
def database(migrated_sqlite_url, monkeypatch):
    monkeypatch.setenv("PROXY_DATABASE_URL", migrated_sqlite_url)
    return migrated_sqlite_url


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "proxy.yaml"
    path.write_text(
        "keys:\n"
        "  - {name: gitops-engine, key_sha256: '" + "a" * 64 + "', profile: support}\n"
        "profiles:\n"
        "  support: {system_prompt: You are Acme support., model: support-model}\n"
    )
    monkeypatch.setenv("PROXY_CONFIG", str(path))
    return path


def run(main, argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_keys_create_prints_the_key_once(database, capsys):
    code, out, err = run(keys_main, ["create", "engine", "--app-id", "1400000001"], capsys)
    assert code == 0, err
    key = re.search(r"^key:\s+(\S+)$", out, re.M).group(1)
    key_id = re.search(r"^id:\s+(\S+)$", out, re.M).group(1)
    assert key.startswith("vp-") and out.count(key) == 1
    assert "not shown again" in err

    stored = in_database(database, lambda s: s.scalar(select(ApiKey).where(ApiKey.id == key_id)))
    assert stored.key_hash == hash_key(key) and stored.app_id == "1400000001"

    code, out, _ = run(keys_main, ["list"], capsys)
    assert code == 0 and key_id in out and "engine" in out and "active" in out
    assert key not in out and key[:10] in out  # the prefix only


def test_keys_create_as_json_with_every_option(database, capsys):
    assert run(profiles_main, ["create", "sales"], capsys)[0] == 0
    argv = [
        "create",
        "seller",
        "--profile",
        "sales",
        "--allow-profile-override",
        "--rate-limit",
        "60",
        "--expires-at",
        "2099-01-01T00:00:00",
        "--json",
    ]
    code, out, _ = run(keys_main, argv, capsys)
    assert code == 0
    created = json.loads(out)
    assert created["key"].startswith("vp-") and created["profile"] == "sales"
    assert created["allow_profile_override"] is True and created["rate_limit_per_minute"] == 60
    assert created["expires_at"] == "2099-01-01T00:00:00Z"
    listed = json.loads(run(keys_main, ["list", "--json"], capsys)[1])
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]


def test_keys_revoke(database, capsys):
    out = run(keys_main, ["create", "temp", "--json"], capsys)[1]
    key_id = json.loads(out)["id"]
    code, out, _ = run(keys_main, ["revoke", key_id], capsys)
    assert code == 0 and "revoked" in out
    listed = json.loads(run(keys_main, ["list", "--json"], capsys)[1])
    assert listed[0]["active"] is False and listed[0]["revoked_at"]
    assert "revoked" in run(keys_main, ["list"], capsys)[1]
    assert run(keys_main, ["revoke", key_id], capsys)[0] == 0  # again: says so, still fine


def test_keys_update(database, capsys):
    key_id = json.loads(run(keys_main, ["create", "temp", "--json"], capsys)[1])["id"]
    argv = ["update", key_id, "--name", "renamed", "--rate-limit", "5"]
    code, out, _ = run(keys_main, [*argv, "--max-cost-per-day", "1.5"], capsys)
    key = json.loads(out)
    assert code == 0 and key["name"] == "renamed" and key["rate_limit_per_minute"] == 5
    assert key["max_cost_per_day"] == 1.5
    assert run(keys_main, ["update", key_id, "--rate-limit", "0"], capsys)[0] == 1
    assert run(keys_main, ["update", "nope", "--name", "x"], capsys)[0] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["revoke", "no-such-id"], "no key 'no-such-id'"),
        (["create", "k", "--profile", "missing"], "no profile 'missing'"),
        (["create", "k", "--rate-limit", "0"], "rate_limit_per_minute"),
        (["create", "k", "--expires-at", "2001-01-01"], "expires_at must be in the future"),
        (["create", "k", "--expires-at", "soon"], "expires_at"),
    ],
)
def test_key_errors_exit_1_with_a_clear_message(database, capsys, argv, message):
    code, _, err = run(keys_main, argv, capsys)
    assert code == 1 and message in err


def test_config_keys_and_profiles_are_shown_and_read_only(database, config_file, capsys):
    listed = json.loads(run(keys_main, ["list", "--json"], capsys)[1])
    assert listed == [
        {
            "id": "config:gitops-engine",
            "name": "gitops-engine",
            "prefix": None,
            "profile": "support",
            "allow_profile_override": False,
            "app_id": None,
            "rate_limit_per_minute": None,
            "max_tokens_per_day": None,
            "max_cost_per_day": None,
            "meta_info_events": None,
            "expires_at": None,
            "revoked_at": None,
            "created_at": None,
            "active": True,
            "origin": "config",
        }
    ]
    code, _, err = run(keys_main, ["revoke", "config:gitops-engine"], capsys)
    assert code == 1 and "configuration" in err
    assert run(keys_main, ["create", "gitops-engine"], capsys)[0] == 1
    assert run(keys_main, ["create", "helper", "--profile", "support"], capsys)[0] == 0

    out = run(profiles_main, ["list"], capsys)[1]
    assert re.search(r"^support\s+support-model\s+prefix\s+config", out, re.M)
    assert run(profiles_main, ["delete", "support"], capsys)[0] == 1
    assert run(profiles_main, ["create", "support"], capsys)[0] == 1


def test_profiles_create_list_show_delete(database, capsys):
    argv = [
        "create",
        "concierge",
        "--system-prompt",
        "You are the concierge.",
        "--mode",
        "override",
    ]
    code, out, _ = run(profiles_main, [*argv, "--model", "voice"], capsys)
    assert code == 0 and "concierge" in out
    assert run(profiles_main, ["create", "concierge"], capsys)[0] == 1

    out = run(profiles_main, ["list"], capsys)[1]
    assert re.search(r"^concierge\s+voice\s+override\s+database", out, re.M)
    shown = json.loads(run(profiles_main, ["show", "concierge", "--json"], capsys)[1])
    assert shown["system_prompt"] == "You are the concierge." and shown["origin"] == "database"
    assert (
        "system_prompt: You are the concierge."
        in run(profiles_main, ["show", "concierge"], capsys)[1]
    )

    assert run(profiles_main, ["delete", "concierge"], capsys)[0] == 0
    code, _, err = run(profiles_main, ["show", "concierge"], capsys)
    assert code == 1 and "no profile 'concierge'" in err
    assert run(profiles_main, ["delete", "concierge"], capsys)[0] == 1
    assert run(profiles_main, ["create", "bad name"], capsys)[0] == 1


def test_tasks_show_an_unknown_task_exits_1(database, capsys):
    code, out, err = run(tasks_main, ["show", "nope"], capsys)
    assert code == 1 and out == "" and "no task 'nope'" in err


def test_tasks_show_prints_the_record_and_transcript(database, capsys):
    at = datetime(2026, 3, 1, 9, tzinfo=UTC)

    async def seed(session):
        session.add(Task(task_id="t-1", room_id="lobby", started_at=at, last_activity_at=at))
        await session.flush()
        for i, (role, text) in enumerate((("user", "Hi."), ("assistant", "Hello, how can I")), 1):
            session.add(
                TranscriptMessage(
                    id=f"m{i}",
                    task_id="t-1",
                    role=role,
                    content=text,
                    interrupted=role == "assistant",
                    created_at=at.replace(second=i),
                )
            )

    in_database(database, seed)
    code, out, _ = run(tasks_main, ["show", "t-1"], capsys)
    assert code == 0
    assert "room_id: lobby" in out and "transcript (2 messages)" in out
    assert "2026-03-01 09:00:01 user: Hi." in out
    assert "assistant [interrupted]: Hello, how can I" in out

    shown = json.loads(run(tasks_main, ["show", "t-1", "--json"], capsys)[1])
    assert (
        shown["task"]["task_id"] == "t-1" and shown["task"]["started_at"] == "2026-03-01T09:00:00Z"
    )
    assert [m["content"] for m in shown["transcript"]] == ["Hi.", "Hello, how can I"]


def test_a_fresh_sqlite_file_is_migrated_as_serve_would(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no PROXY_DATABASE_URL: ./proxy.db, as `proxy serve` uses
    monkeypatch.delenv("PROXY_DATABASE_URL", raising=False)
    code, out, err = run(keys_main, ["list", "--json"], capsys)
    assert (code, json.loads(out), err) == (0, [], "")
    assert (tmp_path / "proxy.db").is_file()
    assert run(keys_main, ["create", "engine"], capsys)[0] == 0
    assert [k["name"] for k in json.loads(run(keys_main, ["list", "--json"], capsys)[1])] == [
        "engine"
    ]


def test_an_unreachable_database_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("PROXY_DATABASE_URL", "postgresql://proxy@127.0.0.1:9/proxy")
    code, _, err = run(keys_main, ["list"], capsys)
    assert code == 1 and "proxy migrate" in err and err.count("\n") == 1


def test_an_invalid_configuration_is_a_clear_error(database, monkeypatch, capsys):
    monkeypatch.setenv("PROXY_ADMIN_TOKEN", "short")
    code, _, err = run(tasks_main, ["show", "x"], capsys)
    assert code == 1 and "invalid configuration" in err
