"""``proxy knowledge`` against a migrated SQLite database."""

from __future__ import annotations

import json

import pytest

from proxy.cli_knowledge import guess_content_type, knowledge_main


@pytest.fixture
def database(migrated_sqlite, monkeypatch):
    monkeypatch.setenv("PROXY_DATABASE_URL", migrated_sqlite)
    return migrated_sqlite


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = knowledge_main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_create_add_list_search_and_delete(database, tmp_path, capsys):
    (tmp_path / "returns.md").write_text("# Returns\nReturns are accepted within 30 days.\n")
    (tmp_path / "hours.html").write_text("<title>营业时间</title><p>门店每天九点开门。</p>")
    assert run(["create", "store", "--description", "FAQ"], capsys)[0] == 0
    code, _, err = run(["create", "store"], capsys)
    assert code == 1 and "exists" in err
    code, out, _ = run(
        ["add", "store", str(tmp_path / "returns.md"), str(tmp_path / "hours.html")], capsys
    )
    assert code == 0 and "returns.md: 1 chunks" in out and "hours.html: 1 chunks" in out
    code, out, _ = run(["list"], capsys)
    assert code == 0 and out.split("\n")[1].split()[:3] == ["store", "2", "2"]
    code, out, _ = run(["list", "store", "--json"], capsys)
    assert sorted(d["source_id"] for d in json.loads(out)) == ["hours.html", "returns.md"]
    code, out, _ = run(["search", "store", "几点开门", "--json"], capsys)
    assert code == 0 and json.loads(out)[0]["title"] == "营业时间"
    code, out, _ = run(["search", "store", "return policy", "-k", "1"], capsys)
    assert code == 0 and out.startswith("1. ") and "returns.md" in out
    assert run(["delete", "store"], capsys)[0] == 0
    code, _, err = run(["search", "store", "x"], capsys)
    assert code == 1 and "no knowledge base 'store'" in err


def test_files_are_checked_before_anything_is_stored(database, tmp_path, capsys):
    run(["create", "store"], capsys)
    (tmp_path / "ok.txt").write_text("fine")
    code, _, err = run(
        ["add", "store", str(tmp_path / "ok.txt"), str(tmp_path / "nope.txt")], capsys
    )
    assert code == 1 and "no file" in err
    (tmp_path / "data.zzq").write_bytes(b"\x00")
    code, _, err = run(["add", "store", str(tmp_path / "data.zzq")], capsys)
    assert code == 1 and "--content-type" in err
    code, _, err = run(
        ["add", "store", str(tmp_path / "data.zzq"), "--content-type", "image/png"], capsys
    )
    assert code == 1 and "unsupported content type" in err
    code, out, _ = run(["list", "store"], capsys)
    assert "ok.txt" not in out


def test_content_types_come_from_extensions(tmp_path):
    from pathlib import Path

    assert [guess_content_type(Path(n)) for n in ("a.MD", "b.htm", "c.pdf", "d.txt")] == [
        "text/markdown",
        "text/html",
        "application/pdf",
        "text/plain",
    ]
