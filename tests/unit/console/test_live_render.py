"""A live console page's render finishes even when the page is left mid-render (a read
cut off mid-statement would keep its SQLite connection's read; see proxy.db.session)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.console import pages


async def test_a_render_outlives_its_page_and_is_then_let_go():
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def render() -> str:
        started.set()
        await release.wait()  # the database read
        finished.append("read")
        return "<tr></tr>"

    page = asyncio.create_task(pages._render_to_the_end(render))
    await started.wait()
    page.cancel()  # the browser left the page
    with pytest.raises(asyncio.CancelledError):
        await page
    assert finished == [] and len(pages._ORPHANED_RENDERS) == 1

    release.set()
    (orphan,) = pages._ORPHANED_RENDERS
    assert await orphan == "<tr></tr>"
    await asyncio.sleep(0)  # its done-callback runs
    assert finished == ["read"] and not pages._ORPHANED_RENDERS


async def test_a_render_for_a_page_still_open_is_returned():
    async def render() -> str:
        return "<p>live</p>"

    assert await pages._render_to_the_end(render) == "<p>live</p>"
    assert not pages._ORPHANED_RENDERS
