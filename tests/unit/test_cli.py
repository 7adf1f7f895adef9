"""``proxy`` commands refuse a bad configuration with one line, never a traceback."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from proxy import __version__
from proxy.cli import DEV_ALIASES, DEV_TOOLS, main


@pytest.fixture
def misspelt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text("histroy:\n  max_turns: 3\n")
    monkeypatch.setenv("PROXY_CONFIG", str(path))
    monkeypatch.chdir(tmp_path)  # an accidental proxy.db stays in the temp dir
    return path


@pytest.mark.parametrize(
    ("argv", "prog"),
    [
        (["serve"], "proxy"),
        (["migrate"], "proxy migrate"),
        (["keys", "list"], "proxy keys"),
        (["profiles", "list"], "proxy profiles"),
        (["knowledge", "list"], "proxy knowledge"),
    ],
)
def test_a_config_error_is_one_line(
    misspelt: Path, argv: list[str], prog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code in (1, 2) and out == ""
    assert err == (
        f"{prog}: invalid configuration: {misspelt}: unknown setting 'histroy'"
        " (did you mean 'history'?)\n"
    )
    assert not (misspelt.parent / "proxy.db").exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"proxy {__version__}\n"


@pytest.mark.parametrize("tool", sorted(DEV_TOOLS))
def test_every_dev_tool_has_its_entry_point(tool: str) -> None:
    module_name, function, _ = DEV_TOOLS[tool]
    assert callable(getattr(importlib.import_module(module_name), function))


@pytest.mark.parametrize("alias", sorted(DEV_ALIASES))
def test_a_top_level_dev_alias_runs_its_dev_tool(
    alias: str, capsys: pytest.CaptureFixture[str]
) -> None:
    helps = []
    for argv in ([alias, "--help"], ["dev", DEV_ALIASES[alias], "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
        helps.append(capsys.readouterr().out)
    assert helps[0] == helps[1] and helps[0].startswith("usage: proxy ")


def test_proxy_dev_lists_the_dev_tools(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dev", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: proxy dev ")
    assert all(f"    {tool}" in out for tool in DEV_TOOLS)
