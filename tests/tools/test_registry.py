"""The tool registry: tools loaded from SQL, looked up in memory, old ones kept on failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from proxy.db.migrate import upgrade
from proxy.db.session import make_engine, make_sessionmaker
from proxy.tools.registry import ToolRegistry, ToolSpec
from proxy.tools.repository import ToolRepository

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@pytest.fixture
async def sessions(sqlite_url) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await asyncio.to_thread(upgrade, sqlite_url)  # env.py runs its own loop
    engine = make_engine(sqlite_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def add_tools(sessions, *names: str) -> None:
    async with sessions() as session, session.begin():
        tools = ToolRepository(session)
        for name in names:
            await tools.create(
                name,
                description=f"The {name} tool.",
                parameters=WEATHER_SCHEMA,
                url=f"https://tools.example/{name}",
                filler="One moment.",
                show_result=True,
            )


async def test_tools_are_loaded_and_listed_in_the_profiles_order(sessions, caplog):
    await add_tools(sessions, "get_weather", "book_table")
    registry = ToolRegistry(sessions)
    assert registry.for_profile(["get_weather"]) == []  # nothing loaded yet
    await registry.refresh()

    weather = registry.get("get_weather")
    assert weather is not None and weather.filler == "One moment." and weather.show_result
    assert weather.timeout_seconds == 5.0 and weather.allow_private_network is False
    assert registry.get("nope") is None
    assert {spec.name for spec in registry.all()} == {"get_weather", "book_table"}

    caplog.set_level(logging.WARNING, logger="proxy.tools.registry")
    caplog.clear()
    names = ["book_table", "missing_tool", "get_weather"]
    assert [s.name for s in registry.for_profile(names)] == ["book_table", "get_weather"]
    assert [s.name for s in registry.for_profile(names)] == ["book_table", "get_weather"]
    warnings = [r for r in caplog.records if "missing_tool" in r.getMessage()]
    assert len(warnings) == 1  # warned once, not on every turn


def test_the_openai_schema_is_a_function_entry():
    spec = ToolSpec(
        name="get_weather",
        description="Current weather.",
        parameters=WEATHER_SCHEMA,
        url="https://tools.example/weather",
    )
    assert spec.openai_schema() == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather.",
            "parameters": WEATHER_SCHEMA,
        },
    }


async def test_a_failed_refresh_keeps_the_tools_loaded_before(sessions):
    await add_tools(sessions, "get_weather")
    registry = ToolRegistry(sessions)
    await registry.refresh()
    async with sessions() as session, session.begin():
        await session.execute(text("DROP TABLE tools"))
    await registry.refresh()
    assert registry.refresh_errors == 1
    assert registry.get("get_weather") is not None


async def test_changes_arrive_with_the_next_refresh(sessions):
    registry = ToolRegistry(sessions, refresh_seconds=3600)
    await registry.start()
    try:
        assert registry.all() == []
        await add_tools(sessions, "get_weather")
        await registry.refresh()
        assert registry.get("get_weather") is not None
        async with sessions() as session, session.begin():
            assert await ToolRepository(session).delete("get_weather") is True
            assert await ToolRepository(session).delete("get_weather") is False
        await registry.refresh()
        assert registry.get("get_weather") is None
    finally:
        await registry.close()
