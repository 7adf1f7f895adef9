"""Every multi-key call the proxy makes outside the history scripts works on a real cluster.

The upstream cooldowns read several targets with one MGET and clear a target with a
two-key DEL: on a cluster that needs one hash slot (``{upstream}``), or Redis answers
CROSSSLOT. Sixteen targets spread over every master without the tag; with it, one slot.
"""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio.cluster import RedisCluster

from proxy.upstream.cooldown import CooldownBook, target_key
from tests.redis_cluster import ThrowawayRedisCluster


async def test_cooldowns_are_shared_through_a_cluster(redis_cluster: ThrowawayRedisCluster):
    prefix = f"proxytest:{uuid.uuid4().hex[:8]}:"
    clients = [RedisCluster.from_url(redis_cluster.url) for _ in range(2)]
    one, other = CooldownBook(), CooldownBook()
    one.share_through(clients[0], prefix)
    other.share_through(clients[1], prefix)
    targets = [target_key(f"https://t{n}.example/v1", "m") for n in range(16)]
    try:
        for key in targets:
            await one.admit(key, probe_seconds=5)
            await other.admit(key, probe_seconds=5)
        for key in targets[:8]:
            one.failed(key, cooldown_seconds=60)
        await asyncio.sleep(0.2)  # the writes go out in the background
        await other.sync()  # one MGET over all sixteen
        assert [other.is_down(key) for key in targets] == [True] * 8 + [False] * 8
        for key in targets[:8]:  # a two-key DEL each
            one.succeeded(key)
        await asyncio.sleep(0.2)
        assert (
            await clients[1].mget([f"{prefix}{{upstream}}:down:{k}" for k in targets])
            == [None] * 16
        )
    finally:
        await one.close()
        await other.close()
        for client in clients:
            for key in [k async for k in client.scan_iter(match=f"{prefix}*")]:
                await client.delete(key)
            await client.aclose()
