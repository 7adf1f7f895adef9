"""The YAML config file: unknown keys and broken YAML are one-line errors naming the spot."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config_file import ConfigError, describe, read_config_file
from proxy.settings import Settings


def refusal(tmp_path: Path, text: str) -> str:
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_config_file(str(path), Settings)
    message = str(caught.value)
    assert "\n" not in message
    return message.removeprefix(f"{path}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "histroy:\n  max_turns: 3\n",
            ": unknown setting 'histroy' (did you mean 'history'?)",
        ),
        (
            "history:\n  max_turn: 3\n",
            ": unknown setting 'history.max_turn' (did you mean 'history.max_turns'?)",
        ),
        (
            "routes:\n  voice:\n    targets:\n      - base_url: http://x\n        modle: gpt\n",
            ": unknown setting 'routes.voice.targets[0].modle'"
            " (did you mean 'routes.voice.targets[0].model'?)",
        ),
        (
            "routes:\n  voice:\n    target: []\n",
            ": unknown setting 'routes.voice.target' (did you mean 'routes.voice.targets'?)",
        ),
        (
            "profiles:\n  support:\n    history: {summarize: true}\n",
            ": unknown setting 'profiles.support.history.summarize'"
            " (did you mean 'profiles.support.history.summarise'?)",
        ),
        (
            "keys:\n  - {name: engine, key_env: K, profil: support}\n",
            ": unknown setting 'keys[0].profil' (did you mean 'keys[0].profile'?)",
        ),
        ("colour: blue\n", ": unknown setting 'colour'"),
        ("routes:\n  voice: [\n", ":3:1: invalid YAML: expected the node content, but found"),
        ("history:\n\tmax_turns: 3\n", ":2:1: invalid YAML: found character '\\t'"),
        ("- just\n- a list\n", ": the top level must be a mapping of settings"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_spot(tmp_path: Path, text: str, expected: str) -> None:
    assert refusal(tmp_path, text).startswith(expected)


def test_a_valid_file_reads_as_its_settings(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(
        "history: {max_turns: 12}\n"
        "routes:\n  voice:\n    targets: [{base_url: 'http://x', model: m}]\n"
        "profiles:\n  support: {history: {summarise: true}}\n"
    )
    data = read_config_file(str(path), Settings)
    assert data["history"] == {"max_turns": 12}
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert read_config_file(str(empty), Settings) == {}


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        read_config_file(str(missing), Settings)
    assert str(caught.value) == f"PROXY_CONFIG names a missing file: {missing}"


def test_a_settings_error_is_one_line_with_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_PORT", "eighty")
    with pytest.raises(ValueError) as caught:
        Settings()
    assert describe(caught.value) == (
        "port (PROXY_PORT): Input should be a valid integer, unable to parse string as an integer"
    )
