"""Bounded by construction: embedded-store tenants, seeded history, the normalise memo."""

from __future__ import annotations

from proxy.context import matching
from proxy.context.assembly import assemble, split_request
from proxy.context.budget import TokenCounter
from proxy.context.history import StoredMessage, TaskHistory
from proxy.context.memory_store import MemoryHistoryStore
from proxy.settings import HistoryPolicy


def turn(n: int) -> list[StoredMessage]:
    return [
        StoredMessage(role="user", content=f"q{n}"),
        StoredMessage(role="assistant", content=f"a{n}"),
    ]


async def test_one_tenant_flooding_tasks_never_evicts_another_tenants_history() -> None:
    store = MemoryHistoryStore(max_tasks=100)
    for n in range(5):
        await store.append(f"victim:task-{n}", turn(n))
    for n in range(10_000):
        await store.append(f"flood:task-{n}", turn(n))
    for n in range(5):
        history = await store.load(f"victim:task-{n}", 10)
        assert [m.content for m in history.messages] == [f"q{n}", f"a{n}"]
    assert store.task_count == 100
    assert (await store.load("flood:task-9999", 10)).total_messages == 2
    assert (await store.load("flood:task-0", 10)).total_messages == 0  # its own oldest went


async def test_a_per_tenant_cap_keeps_room_for_others() -> None:
    store = MemoryHistoryStore(max_tasks=100, max_tasks_per_tenant=10)
    for n in range(50):
        await store.append(f"flood:task-{n}", turn(n))
    assert store.task_count == 10
    await store.reset("flood:task-49")
    await store.append("task-bare", turn(0))  # bare task ids are one more tenant
    assert store.task_count == 10
    assert (await store.load("flood:task-48", 10)).total_messages == 2


def test_seeded_history_is_capped_to_what_a_request_can_load() -> None:
    earlier = []
    for n in range(25_000):  # 50,000 messages in one request
        earlier += [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]
    messages = [{"role": "system", "content": "s"}, *earlier, {"role": "user", "content": "now"}]
    policy = HistoryPolicy(load_limit=80)
    prompt = assemble(
        split_request(messages),
        TaskHistory(messages=[], summary=None, total_messages=0),
        policy=policy,
        counter=TokenCounter(),
        request_id="r1",
    )
    assert prompt.seed is not None and len(prompt.seed) == 80
    assert prompt.seed[0].role == "user" and prompt.seed[0].content == "q24960"
    assert prompt.seed[-1].content == "a24999"


def test_seed_never_starts_with_a_cut_off_reply() -> None:
    earlier = [{"role": "user", "content": "q0"}]
    earlier += [{"role": "assistant", "content": f"a{n}"} for n in range(10)]
    earlier += [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a"}]
    messages = [*earlier, {"role": "user", "content": "now"}]
    prompt = assemble(
        split_request(messages),
        TaskHistory(messages=[], summary=None, total_messages=0),
        policy=HistoryPolicy(load_limit=5),
        counter=TokenCounter(),
        request_id=None,
    )
    assert prompt.seed is not None and [m.content for m in prompt.seed] == ["q1", "a"]


def test_the_normalise_memo_holds_bounded_bytes() -> None:
    memo = matching._ByteBoundedMemo(max_bytes=64 * 1024)
    for n in range(10_000):
        memo.put(f"text number {n} " * 10, "x")
    assert memo.bytes <= 64 * 1024
    memo.put("y" * 10_000_000, "y")  # too big to keep at all
    assert memo.get("y" * 10_000_000) is None
    huge = "Hello, World! " * 100_000
    assert matching.normalise(huge) == "helloworld" * 100_000
    assert matching._memo.bytes <= matching.CACHE_MAX_BYTES
