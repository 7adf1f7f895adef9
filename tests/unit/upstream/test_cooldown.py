"""Cooldown bookkeeping in one process (the Redis sharing is tested with real proxies)."""

from __future__ import annotations

import asyncio

from proxy.upstream.cooldown import Admission, CooldownBook


async def test_a_failed_target_is_skipped_then_probed_once() -> None:
    book = CooldownBook()
    assert await book.admit("t", 1.0) is Admission.USE
    book.failed("t", 0.2)
    assert [await book.admit("t", 1.0) for _ in range(3)] == [Admission.SKIP] * 3
    await asyncio.sleep(0.25)
    assert await book.admit("t", 1.0) is Admission.PROBE
    assert await book.admit("t", 1.0) is Admission.SKIP  # one probe at a time
    book.succeeded("t")
    assert await book.admit("t", 1.0) is Admission.USE


async def test_a_failed_probe_cools_down_again_and_a_lost_probe_is_retried() -> None:
    book = CooldownBook()
    book.failed("t", 0.1)
    await asyncio.sleep(0.15)
    assert await book.admit("t", 0.1) is Admission.PROBE
    book.failed("t", 0.1)
    assert await book.admit("t", 0.1) is Admission.SKIP
    await asyncio.sleep(0.15)
    assert await book.admit("t", 0.1) is Admission.PROBE  # the probe's caller left: no verdict
    await asyncio.sleep(0.15)
    assert await book.admit("t", 0.1) is Admission.PROBE


async def test_cooldown_zero_is_off() -> None:
    book = CooldownBook()
    book.failed("t", 0)
    assert await book.admit("t", 1.0) is Admission.USE
