"""Once a key is in the database, the proxy knows it needs keys: the ``--host`` check lets
it listen beyond loopback, and the start-up warning no longer says "anyone can use it"."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from proxy.app import create_app
from proxy.cli import _has_caller_keys, main
from proxy.cli_admin import keys_main
from proxy.logs import configure_logging
from proxy.settings import Settings

WARNING = "no caller keys: anyone who can reach this port can use it"


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """``proxy serve`` installs its JSON handler on the root logger, here on the captured
    stderr of this test: put the test runner's handlers back after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def fresh_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with nothing configured: the embedded SQLite file lands here."""
    for variable in ("PROXY_DATABASE_URL", "PROXY_API_KEYS", "PROXY_CONFIG", "PROXY_REDIS_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def started_warnings(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The keys warnings one start-up logs (JSON lines on stderr)."""
    configure_logging("info")
    capsys.readouterr()
    with TestClient(create_app(Settings())):
        pass
    lines = capsys.readouterr().err.splitlines()
    return [line for line in lines if f'"msg":"{WARNING}' in line]


def test_host_check_and_warning_follow_database_keys(
    fresh_directory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("proxy: refusing to listen on 0.0.0.0 without caller keys.")
    assert "`proxy keys create NAME`" in err
    assert _has_caller_keys(Settings()) is False
    assert len(started_warnings(capsys)) == 1

    assert keys_main(["create", "engine"]) == 0
    capsys.readouterr()
    assert _has_caller_keys(Settings()) is True
    assert started_warnings(capsys) == []

    assert (fresh_directory / "proxy.db").is_file()
    assert keys_main(["list", "--json"]) == 0
    (key,) = json.loads(capsys.readouterr().out)
    assert keys_main(["revoke", key["id"]]) == 0
    assert _has_caller_keys(Settings()) is False  # a revoked key lets nobody in
