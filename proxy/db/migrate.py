"""Run the Alembic migrations in ``migrations/`` from code, and ``proxy migrate``.

The functions here are synchronous: ``migrations/env.py`` runs its async engine in its
own event loop (``asyncio.run``). From async code call them in a worker thread::

    await asyncio.to_thread(upgrade, url)

``url`` defaults to what the proxy itself uses (``Settings().database_url``, i.e.
``PROXY_DATABASE_URL`` or ``PROXY_CONFIG``; unset means SQLite ``./proxy.db``); a plain
``postgresql://`` URL is fine.

Where the migrations are found:

* ``alembic.ini`` at the project root, next to the ``proxy`` package (a repo checkout or
  an editable install), which names ``migrations/`` beside it;
* otherwise (the package installed from a wheel, which carries them as
  ``proxy/migrations``) a Config built in code whose ``script_location`` is the first
  ``migrations`` directory with an ``env.py``: in the package, next to the package's
  project root, or in the current working directory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


PACKAGED_MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"  # in a wheel


def _migrations_dir() -> Path:
    for candidate in (PACKAGED_MIGRATIONS, PROJECT_ROOT / "migrations", Path.cwd() / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"no migrations/env.py in {PACKAGED_MIGRATIONS.parent}, next to {PROJECT_ROOT} or in "
        f"the working directory {Path.cwd()}"
    )


def make_config(url: str | None = None) -> Config:
    """An Alembic Config for this project; ``url`` overrides the configured database."""
    if ALEMBIC_INI.is_file():
        config = Config(str(ALEMBIC_INI))
    else:
        config = Config()
        config.set_main_option("script_location", str(_migrations_dir()))
    if url:
        config.attributes["url"] = url
    # Leave the caller's logging alone (env.py would otherwise apply alembic.ini's).
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(make_config(url), revision)


def migrate_embedded(url: str | None) -> None:
    """Migrate the embedded SQLite file, as ``proxy serve`` does at start-up, so that every
    command works in a fresh directory. Other databases are migrated by ``proxy migrate``."""
    from proxy.db.session import async_url

    resolved = async_url(url)
    if resolved.startswith("sqlite"):
        upgrade(resolved)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(make_config(url), revision)


def current(url: str | None = None) -> str | None:
    """The database's revision; None before the first migration."""
    config = make_config(url)
    script = ScriptDirectory.from_config(config)
    found: list[str | None] = []

    def read(rev: object, context: MigrationContext) -> list[object]:
        found.append(context.get_current_revision())
        return []  # no migration steps: only look

    with EnvironmentContext(config, script, fn=read, dont_mutate=True):
        script.run_env()
    return found[0] if found else None


def describe_url(url: str | None) -> str:
    """The database a command would use, with any password hidden."""
    from sqlalchemy.engine import make_url

    from proxy.db.session import async_url

    if not url:
        from proxy.settings import Settings

        url = Settings().database_url
    return make_url(async_url(url)).render_as_string(hide_password=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``proxy migrate [--url URL] [--revision R] [--downgrade]``."""
    parser = argparse.ArgumentParser(
        prog="proxy migrate", description="Bring the database schema to a revision."
    )
    parser.add_argument("--url", help="database URL (default: PROXY_DATABASE_URL / settings)")
    parser.add_argument(
        "--revision", help='target revision (default "head"; required with --downgrade)'
    )
    parser.add_argument(
        "--downgrade",
        action="store_true",
        help='migrate down to --revision ("base" drops every table)',
    )
    args = parser.parse_args(argv)
    if args.downgrade and not args.revision:
        parser.error('--downgrade needs an explicit --revision (e.g. "base" or "-1")')

    if args.url is None:
        from proxy.config_file import describe
        from proxy.settings import Settings

        try:
            Settings()  # refused here as one line, not as a traceback from env.py
        except ValueError as exc:
            print(f"proxy migrate: invalid configuration: {describe(exc)}", file=sys.stderr)
            return 2
    try:
        target = describe_url(args.url)
        before = current(args.url)
        if args.downgrade:
            downgrade(args.url, args.revision)
        else:
            upgrade(args.url, args.revision or "head")
        after = current(args.url)
    except Exception as exc:
        print(f"proxy migrate: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    action = "downgraded" if args.downgrade else "upgraded"
    if before == after:
        print(f"{target}: already at {after or 'base'}")
    else:
        print(f"{target}: {action} {before or 'base'} -> {after or 'base'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
