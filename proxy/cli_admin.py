"""``proxy keys | profiles | tasks``: operator commands straight on the database.

They use ``PROXY_DATABASE_URL`` (and ``PROXY_CONFIG`` for config-declared entities,
shown read-only). Running proxies pick changes up within ``PROXY_KEY_CACHE_SECONDS``.
Failures print one clear line and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.admin import Admin, AdminStore
from proxy.admin.models import KeyCreate, KeyOut, KeyUpdate, ProfileCreate
from proxy.api.admin_task_ids import AmbiguousTask, choose, is_task_key, recorded_task_keys
from proxy.api.schemas import TaskOut, TranscriptMessageOut
from proxy.call import task_key
from proxy.config_file import describe
from proxy.db.migrate import migrate_embedded
from proxy.db.repositories import TaskRepository, TranscriptRepository
from proxy.db.session import make_engine, make_sessionmaker
from proxy.errors import NotFound, ProxyError
from proxy.settings import Settings

Sessions = async_sessionmaker[AsyncSession]
Command = Callable[[Settings, Sessions, argparse.Namespace], Awaitable[None]]


class CommandFailed(Exception):
    """A failure the operator can act on; printed without a traceback."""


def _run(prog: str, command: Command, args: argparse.Namespace) -> int:
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        print(f"{prog}: invalid configuration: {describe(exc)}", file=sys.stderr)
        return 1

    async def with_database() -> None:
        engine = make_engine(settings.database_url)
        try:
            await command(settings, make_sessionmaker(engine), args)
        finally:
            await engine.dispose()

    try:
        migrate_embedded(settings.database_url)  # as `proxy serve` would
        asyncio.run(with_database())
    except CommandFailed as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except ProxyError as exc:  # from the admin services: NotFound, Conflict, ...
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return 1
    except (DBAPIError, PoolTimeout, OSError) as exc:
        cause = getattr(exc, "orig", None) or exc
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        print(
            f"{prog}: database error ({type(cause).__name__}: {first_line}). "
            "Is PROXY_DATABASE_URL right, and has `proxy migrate` been run?",
            file=sys.stderr,
        )
        return 1
    return 0


Model = TypeVar("Model", bound=BaseModel)
Actions = argparse._SubParsersAction  # what add_subparsers returns (argparse names it so)


def _validated(model: type[Model], data: dict[str, Any]) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise CommandFailed(problems) from exc


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(header)] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _parser(
    prog: str, description: str
) -> tuple[argparse.ArgumentParser, Actions[argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    return parser, parser.add_subparsers(dest="action", required=True)


# proxy keys


def _admin(settings: Settings, sessions: Sessions) -> Admin:
    return Admin(AdminStore(settings, sessions))


async def _keys_create(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
    body: KeyCreate = _validated(
        KeyCreate,
        {
            "name": args.name,
            "profile": args.profile,
            "allow_profile_override": args.allow_profile_override,
            "app_id": args.app_id,
            "rate_limit_per_minute": args.rate_limit,
            "max_tokens_per_day": args.max_tokens_per_day,
            "max_cost_per_day": args.max_cost_per_day,
            "expires_at": args.expires_at,
        },
    )
    created = await _admin(settings, sessions).keys.create(body)
    if args.json:
        _print_json(created.model_dump(mode="json"))
    else:
        print(f"id:   {created.id}\nname: {created.name}\nkey:  {created.key}")
    print("Store the key now: it is not shown again.", file=sys.stderr)


async def _keys_list(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
    keys = await _admin(settings, sessions).keys.list()
    if args.json:
        _print_json([key.model_dump(mode="json") for key in keys])
        return

    def state(key: KeyOut) -> str:
        return "active" if key.active else ("revoked" if key.revoked_at else "expired")

    _print_table(
        ("ID", "NAME", "PREFIX", "PROFILE", "APP", "STATE", "ORIGIN"),
        [(k.id, k.name, k.prefix, k.profile, k.app_id, state(k), k.origin) for k in keys],
    )


async def _keys_revoke(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
    revoked = await _admin(settings, sessions).keys.revoke(args.id)
    key = revoked.key
    print(f"key {key.id} ({key.name}) {'was already' if revoked.already else 'is now'} revoked")


async def _keys_update(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
    sent = {
        "name": args.name,
        "profile": args.profile,
        "rate_limit_per_minute": args.rate_limit,
        "max_tokens_per_day": args.max_tokens_per_day,
        "max_cost_per_day": args.max_cost_per_day,
    }
    body = _validated(KeyUpdate, {k: v for k, v in sent.items() if v is not None})
    key = await _admin(settings, sessions).keys.update(args.id, body)
    _print_json(key.model_dump(mode="json"))


def keys_main(argv: list[str] | None = None) -> int:
    parser, actions = _parser("proxy keys", "Create, list, update and revoke caller keys.")
    create = actions.add_parser("create", help="create a key (printed once)")
    create.add_argument("name")
    create.add_argument("--profile", help="profile the key's calls use")
    create.add_argument("--allow-profile-override", action="store_true")
    create.add_argument("--app-id", help="TRTC SdkAppId (tenant) the key may act for")
    create.add_argument("--rate-limit", type=int, help="requests per minute")
    create.add_argument("--max-tokens-per-day", type=int, help="daily token budget")
    create.add_argument("--max-cost-per-day", type=float, help="daily cost budget")
    create.add_argument("--expires-at", help="ISO 8601 date-time (naive = UTC)")
    create.add_argument("--json", action="store_true")
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    update = actions.add_parser("update", help="change a key's name, profile, limits (by id)")
    update.add_argument("id")
    update.add_argument("--name")
    update.add_argument("--profile")
    update.add_argument("--rate-limit", type=int, help="requests per minute")
    update.add_argument("--max-tokens-per-day", type=int)
    update.add_argument("--max-cost-per-day", type=float)
    args = parser.parse_args(argv)
    commands = {
        "create": _keys_create,
        "list": _keys_list,
        "revoke": _keys_revoke,
        "update": _keys_update,
    }
    return _run("proxy keys", commands[args.action], args)


# proxy profiles


async def _profiles_list(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
    profiles = await _admin(settings, sessions).profiles.list()
    if args.json:
        _print_json([profile.model_dump(mode="json") for profile in profiles])
        return
    _print_table(
        ("NAME", "MODEL", "PROMPT MODE", "ORIGIN", "DESCRIPTION"),
        [(p.name, p.model, p.system_prompt_mode, p.origin, p.description) for p in profiles],
    )


async def _profiles_show(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
    profile = await _admin(settings, sessions).profiles.get(args.name)
    data = profile.model_dump(mode="json")
    if args.json:
        _print_json(data)
        return
    for field, value in data.items():
        shown = value if isinstance(value, str) or value is None else json.dumps(value)
        print(f"{field}: {'-' if shown is None else shown}")


async def _profiles_create(
    settings: Settings, sessions: Sessions, args: argparse.Namespace
) -> None:
    fields = {
        "name": args.name,
        "description": args.description,
        "system_prompt": args.system_prompt,
        "system_prompt_mode": args.mode,
        "model": args.model,
    }
    body: ProfileCreate = _validated(ProfileCreate, {k: v for k, v in fields.items() if v})
    await _admin(settings, sessions).profiles.create(body)
    print(f"profile {body.name} created")


async def _profiles_delete(
    settings: Settings, sessions: Sessions, args: argparse.Namespace
) -> None:
    await _admin(settings, sessions).profiles.delete(args.name)
    print(f"profile {args.name} deleted")


def profiles_main(argv: list[str] | None = None) -> int:
    parser, actions = _parser("proxy profiles", "Manage agent profiles.")
    listing = actions.add_parser("list", help="list profiles")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="show one profile")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    create = actions.add_parser("create", help="create a profile")
    create.add_argument("name")
    create.add_argument("--system-prompt")
    create.add_argument("--mode", choices=("prefix", "override"), default=None)
    create.add_argument("--model", help="route alias or upstream model")
    create.add_argument("--description")
    delete = actions.add_parser("delete", help="delete a profile")
    delete.add_argument("name")
    args = parser.parse_args(argv)
    commands = {
        "list": _profiles_list,
        "show": _profiles_show,
        "create": _profiles_create,
        "delete": _profiles_delete,
    }
    return _run("proxy profiles", commands[args.action], args)


# proxy tasks


async def _tasks_show(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
    async with sessions() as session:
        key = task_key(args.app_id, args.task_id)
        if args.app_id is None and not is_task_key(args.task_id):  # the engine's TaskId
            try:
                key = choose(args.task_id, await recorded_task_keys(session, args.task_id))
            except AmbiguousTask as exc:
                raise CommandFailed(
                    f"several apps have a task {args.task_id!r}: "
                    f"{', '.join(exc.task_keys)}; name one with --app-id"
                ) from exc
            except NotFound as exc:
                raise CommandFailed(f"no task {args.task_id!r} in the database") from exc
        row = await TaskRepository(session).get(key)
        messages = await TranscriptRepository(session).for_task(key)
    if row is None and not messages:
        raise CommandFailed(f"no task {key!r} in the database")
    task = TaskOut.model_validate(row) if row is not None else None
    transcript = [TranscriptMessageOut.model_validate(m) for m in messages]
    if args.json:
        _print_json(
            {
                "task": task.model_dump(mode="json") if task else None,
                "transcript": [m.model_dump(mode="json") for m in transcript],
            }
        )
        return
    if task is not None:
        for field, value in task.model_dump(mode="json").items():
            print(f"{field}: {'-' if value is None else value}")
    else:
        print(f"task_id: {key} (no task record)")
    print(f"\ntranscript ({len(transcript)} messages):")
    for m in transcript:
        flags = " [interrupted]" if m.interrupted else ""
        flags += f" [{m.source}]" if m.source != "turn" else ""
        text = m.content if isinstance(m.content, str) else json.dumps(m.content or "")
        if m.tool_calls:
            text = f"{text} tool_calls={json.dumps(m.tool_calls, ensure_ascii=False)}"
        print(f"  {m.created_at:%Y-%m-%d %H:%M:%S} {m.role}{flags}: {text}")


def tasks_main(argv: list[str] | None = None) -> int:
    parser, actions = _parser("proxy tasks", "Inspect conversation tasks.")
    show = actions.add_parser("show", help="a task's record and durable transcript")
    show.add_argument(
        "task_id",
        help='a task key ("<app id>:<task id>"), or the engine\'s TaskId: found in the one '
        "app that has it, or in the app named by --app-id",
    )
    show.add_argument("--app-id", help="the tenant (SdkAppId) the task id belongs to")
    show.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    return _run("proxy tasks", {"show": _tasks_show}[args.action], args)
