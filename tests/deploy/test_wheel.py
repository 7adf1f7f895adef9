"""The built wheel is enough to run the proxy's operator commands: it carries the Alembic
migrations, so ``proxy migrate`` works in a fresh virtualenv, far from the checkout."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from proxy.db.models import Base

ROOT = Path(__file__).resolve().parents[2]
REVISIONS = sorted(p.stem for p in (ROOT / "migrations" / "versions").glob("[0-9]*.py"))

pytestmark = pytest.mark.slow


def _run(*command: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the built wheel and the locked dependencies; its bin/."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not on the PATH (it builds the wheel)")
    work = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    built = _run(uv, "build", "--wheel", "--out-dir", work / "dist", cwd=ROOT, env=env)
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("voice_llm_proxy-*.whl")
    exported = _run(
        uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", cwd=ROOT, env=env
    )
    assert exported.returncode == 0, exported.stderr
    (work / "requirements.txt").write_text(exported.stdout)
    venv = work / "venv"
    assert _run(uv, "venv", "--quiet", venv, cwd=work, env=env).returncode == 0
    install = [uv, "pip", "install", "--quiet", "--python", venv / "bin" / "python"]
    install += ["-r", work / "requirements.txt", wheel]
    # From uv's cache when it holds everything (no network), else from PyPI.
    result = _run(*install, "--offline", cwd=work, env=env)
    if result.returncode != 0:
        result = _run(*install, cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    return venv / "bin"


def test_proxy_migrate_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    # A directory with no alembic.ini and no migrations/: only the wheel can supply them.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "VIRTUAL_ENV"))}
    env["PROXY_DATABASE_URL"] = f"sqlite:///{tmp_path / 'proxy.db'}"
    where = _run(
        installed / "python",
        "-c",
        "import proxy.db.migrate as m; print(m.make_config().get_main_option('script_location'))",
        cwd=tmp_path,
        env=env,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(installed.parent / "lib"))

    first = _run(installed / "proxy", "migrate", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    head = REVISIONS[-1].split("_")[0]
    assert re.fullmatch(rf"\S+proxy\.db: upgraded base -> {head}\n", first.stdout)
    with sqlite3.connect(tmp_path / "proxy.db") as db:
        assert db.execute("select version_num from alembic_version").fetchall() == [(head,)]
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
    assert tables - {"alembic_version", "sqlite_sequence"} == set(Base.metadata.tables)

    again = _run(installed / "proxy", "migrate", cwd=tmp_path, env=env)
    assert again.returncode == 0 and again.stdout.endswith(f": already at {head}\n")

    version = _run(installed / "proxy", "--version", cwd=tmp_path, env=env)
    assert version.returncode == 0 and re.fullmatch(r"proxy \d+\.\d+\.\d+\S*\n", version.stdout)
    keys = _run(installed / "proxy", "keys", "list", "--json", cwd=tmp_path, env=env)
    assert (keys.returncode, keys.stdout, keys.stderr) == (0, "[]\n", "")
