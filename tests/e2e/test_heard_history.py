"""What the next upstream request carries after the 905s and engine histories a real engine
produces, with two proxy processes on one Redis (the mock upstream records requests)."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from proxy.context.redis_store import RedisHistoryStore
from tests.conftest import REDIS_URL
from tests.conftest import _delete_keys as delete_keys
from tests.context.engine_calls import SYSTEM, assistant, engine_headers, task_key, user
from tests.e2e.procs import ProxyProcess
from tests.e2e.replicas import LoggedProxy
from tests.faults.helpers import RawStream, data_events, post_callback, spoken

pytestmark = pytest.mark.slow  # two proxy processes (about 20 s in all)

SIGN_KEY = "heardSignKey0123456789"
ADMIN = "admin-token-for-heard-tests-0123456789"
WELCOME = "Hello, this is your bank. Are you calling about your card?"
PUSH = "Please note: our offices close early today."
PREFIX = "PROXY_REDIS_PREFIX"
LONG = "Sure, I can block it right away, and then we will send you a new card by post."


class Replica:
    def __init__(self, process: ProxyProcess) -> None:
        self.process = process
        self.url = process.url
        self.base_url = process.url + "/v1"


@pytest.fixture(scope="module")
def replica_pair(upstream, tmp_path_factory):
    """Two replicas for the whole module (each test uses its own tasks)."""
    prefix = f"proxytest:{uuid.uuid4().hex[:12]}:"
    database = tmp_path_factory.mktemp("heard") / "shared.db"
    env = {
        "PROXY_UPSTREAM_BASE_URL": upstream.base_url,
        "PROXY_REDIS_URL": REDIS_URL,
        "PROXY_REDIS_PREFIX": prefix,
        "PROXY_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "PROXY_CALLBACK_SIGN_KEY": SIGN_KEY,
        "PROXY_ADMIN_TOKEN": ADMIN,
        # The default safety net (2 s): the turns below come sooner, the stream lasts longer.
        "PROXY_SPOKEN_GRACE_SECONDS": "2",
    }
    logs = tmp_path_factory.mktemp("heard-logs")
    processes = [LoggedProxy(env, logs / f"replica-{n}.log").start() for n in range(2)]
    yield [Replica(p) for p in processes]
    for process in processes:
        process.stop()
    delete_keys(prefix)


@pytest.fixture
def replicas(replica_pair, mock):
    return replica_pair


def new_task() -> str:
    return f"heard-{uuid.uuid4().hex[:10]}"


def spoken_905(replica: Replica, task: str, text: str) -> None:
    response = post_callback(replica, SIGN_KEY, task, 905, {"UserId": "bot", "Text": text})
    assert response.status_code == 200, response.text


def turn(replica: Replica, task: str, messages: list[dict], reply: str) -> str:
    body = {"model": "voice", "stream": True, "messages": messages, "mock": {"reply": reply}}
    response = httpx.post(
        replica.base_url + "/chat/completions", json=body, headers=engine_headers(task), timeout=15
    )
    assert response.status_code == 200, response.text
    return spoken(data_events(response.text))


def sent_upstream(mock) -> list[dict]:
    return mock.requests[-1].body["messages"]


def history(replica: Replica, task: str) -> list[tuple[str, str, bool]]:
    response = httpx.get(
        f"{replica.url}/admin/tasks/{task_key(task)}",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=15,
    )
    assert response.status_code == 200, response.text
    return [(m["role"], m["content"], m["interrupted"]) for m in response.json()["messages"]]


@pytest.mark.parametrize("answer_after", [0.4, 1.2])
def test_a_welcome_905_goes_with_the_first_turn(replicas, mock, answer_after):
    a, b = replicas
    task = new_task()
    spoken_905(a, task, WELCOME)
    time.sleep(answer_after)
    assert turn(b, task, [SYSTEM, user("Yes.")], "Let me look.") == "Let me look."
    assert sent_upstream(mock) == [SYSTEM, assistant(WELCOME), user("Yes.")]


def test_a_905_left_waiting_by_a_dead_replica_goes_with_the_next_turn(replicas, mock):
    """A 905 that came while another replica's reply was in flight waits for it; that
    replica died (its lease ended, nothing will commit). The next turn, with a request
    id, claims its own lease as it starts: that lease is no reply the 905 waits for, so
    the 905 goes upstream with this very turn, before its user message."""
    a, b = replicas
    task = new_task()
    keys = RedisHistoryStore(aioredis.Redis(), prefix=a.process.env[PREFIX])  # key names
    client = redis.Redis.from_url(REDIS_URL)
    lease_ends = int((time.time() + 0.3) * 1000)  # the dead replica's last refresh
    client.hset(keys.live_key(task_key(task)), "dead-attempt", f"{lease_ends}|dead-replica")
    spoken_905(a, task, WELCOME)  # waits: a reply looks in flight
    time.sleep(0.4)  # the lease ended; the safety net (2 s) has not run
    assert turn(b, task, [SYSTEM, user("Yes.")], "Let me look.") == "Let me look."
    assert sent_upstream(mock) == [SYSTEM, assistant(WELCOME), user("Yes.")]
    assert history(a, task) == [
        ("assistant", WELCOME, False),
        ("user", "Yes.", False),
        ("assistant", "Let me look.", False),
    ]


def test_a_905_queued_behind_a_slow_commit_settles_its_reply_not_a_copy(replicas, mock):
    """Under load a reply's commit misses its time box and lands from the retrier: its
    905 came first and waited (the reply's lease was live). The next turn starts while a
    reply still looks in flight, so its start cannot settle the 905; its commit does: the
    905 belongs to the reply written since, which it settles, never a second copy."""
    a, b = replicas
    task = new_task()
    assert turn(a, task, [SYSTEM, user("Hi.")], "Hello!") == "Hello!"  # the retried commit
    keys = RedisHistoryStore(aioredis.Redis(), prefix=a.process.env[PREFIX])  # key names
    client = redis.Redis.from_url(REDIS_URL)
    lease_ends = int((time.time() + 1.0) * 1000)  # the reply's commit, still being retried
    client.hset(keys.live_key(task_key(task)), "retried-commit", f"{lease_ends}|a-replica")
    # The 905 came between the commit's fold and its landing: it waits, as the store
    # queues it (``add_spoken``: a reply in flight), with no safety-net timer running here.
    item = {"text": "Hello!", "at": time.time()}
    client.rpush(keys.pending_key(task_key(task)), json.dumps(item))
    slow = {"reply": "Fine.", "chunks": 10, "gap_ms": 150}  # 1.5 s: past the lease
    body = {"model": "voice", "stream": True, "messages": [SYSTEM, user("How are you?")]}
    response = httpx.post(
        b.base_url + "/chat/completions",
        json={**body, "mock": slow},
        headers=engine_headers(task),
        timeout=15,
    )
    assert spoken(data_events(response.text)) == "Fine."
    assert history(a, task) == [
        ("user", "Hi.", False),
        ("assistant", "Hello!", False),
        ("user", "How are you?", False),
        ("assistant", "Fine.", False),
    ]


def test_a_stalled_first_attempt_never_takes_its_retrys_905(replicas, mock):
    """The engine gives up on a first attempt whose replica is stalled (no CPU) and
    retries the request id on the other replica; the user barges in on the retry's
    reply, and its 905 waits for that reply's commit. The stalled replica then sees its
    caller gone and writes its attempt, which is refused (the retry owns the request):
    a 905 it folded in goes back to wait for the retry's commit, which cuts the reply."""
    a, b = replicas
    task = new_task()
    request_id = uuid.uuid4().hex
    headers = engine_headers(task, request_id)
    messages = [SYSTEM, user("Block my card.")]
    slow = {"reply": LONG, "first_token_ms": 10_000}  # the first attempt's upstream stalls
    body = {"model": "voice", "stream": True, "messages": messages, "mock": slow}
    first = RawStream(a.url, "/v1/chat/completions", body, headers)
    first.send()
    time.sleep(0.5)  # A1 claimed the request and waits for its first token
    stalled = a.process.process
    assert stalled is not None
    stalled.send_signal(signal.SIGSTOP)
    try:
        first.close()  # the engine's timeout: it gives up on the first attempt
        received: list[str] = []

        def retry() -> None:
            body = {
                "model": "voice",
                "stream": True,
                "messages": messages,
                "mock": {"reply": LONG, "chunks": 36, "gap_ms": 100},  # 3.6 s
            }
            with httpx.stream(
                "POST", b.base_url + "/chat/completions", json=body, headers=headers, timeout=15
            ) as response:
                received.append(spoken(data_events(response.read().decode())))

        streaming = threading.Thread(target=retry)
        streaming.start()
        time.sleep(0.6)
        spoken_905(b, task, "Sure, I can")  # waits: the retry's reply is in flight
    finally:
        stalled.send_signal(signal.SIGCONT)  # A sees its caller gone: writes its attempt
    streaming.join()
    assert received == [LONG]
    assert history(b, task) == [
        ("user", "Block my card.", False),
        ("assistant", "Sure, I can", True),
    ]


def test_a_first_attempt_claimed_late_never_takes_over_its_retry(replicas, mock):
    """The first attempt reaches a stalled replica (no CPU): the engine gives up on it
    and retries the request id on the other replica. The stalled replica reads the
    abandoned attempt only while the retry streams: it must not take the request over,
    or the reply the user hears is never recorded."""
    a, b = replicas
    task = new_task()
    request_id = uuid.uuid4().hex
    headers = engine_headers(task, request_id)
    messages = [SYSTEM, user("Block my card.")]
    stalled = a.process.process
    assert stalled is not None
    stalled.send_signal(signal.SIGSTOP)
    try:
        body = {"model": "voice", "stream": True, "messages": messages, "mock": {"reply": LONG}}
        first = RawStream(a.url, "/v1/chat/completions", body, headers)
        first.send()  # in the stalled replica's socket buffer
        first.sock.close()  # the engine's timeout: it gives up on the first attempt
        received: list[str] = []

        def retry() -> None:
            slow = {"reply": LONG, "chunks": 36, "gap_ms": 100}  # 3.6 s
            with httpx.stream(
                "POST",
                b.base_url + "/chat/completions",
                json={**body, "mock": slow},
                headers=headers,
                timeout=15,
            ) as response:
                received.append(spoken(data_events(response.read().decode())))

        streaming = threading.Thread(target=retry)
        streaming.start()
        time.sleep(0.6)
    finally:
        stalled.send_signal(signal.SIGCONT)  # A reads the abandoned attempt now
    streaming.join()
    assert received == [LONG]
    time.sleep(0.5)  # A's attempt ends too
    assert history(b, task) == [("user", "Block my card.", False), ("assistant", LONG, False)]


def test_a_server_push_905_between_turns_goes_with_the_next_turn(replicas, mock):
    a, b = replicas
    task = new_task()
    turn(a, task, [SYSTEM, user("Hi.")], "Hello!")
    spoken_905(b, task, "Hello!")
    spoken_905(a, task, PUSH)
    turn(b, task, [SYSTEM, user("Thanks.")], "You're welcome.")
    assert sent_upstream(mock) == [
        SYSTEM,
        user("Hi."),
        assistant("Hello!"),
        assistant(PUSH),
        user("Thanks."),
    ]


def test_a_905_while_the_reply_streams_on_the_other_replica_cuts_it(replicas, mock):
    a, b = replicas
    task = new_task()
    received: list[str] = []

    def stream() -> None:
        body = {
            "model": "voice",
            "stream": True,
            "messages": [SYSTEM, user("Block my card.")],
            "mock": {"reply": LONG, "chunks": 36, "gap_ms": 100},  # 3.6 s
        }
        with httpx.stream(
            "POST",
            a.base_url + "/chat/completions",
            json=body,
            headers=engine_headers(task),
            timeout=15,
        ) as response:
            received.append(spoken(data_events(response.read().decode())))

    streaming = threading.Thread(target=stream)
    streaming.start()
    time.sleep(0.6)  # the reply is streaming on A; the user barged in after "Sure, I can"
    # The 905 comes to B while A streams for 3 s more: longer than the safety net.
    spoken_905(b, task, "Sure, I can")
    streaming.join()
    assert received == [LONG]  # the stream went on to its end on A
    turn(b, task, [SYSTEM, user("Why?")], "Because.")
    assert sent_upstream(mock) == [
        SYSTEM,
        user("Block my card."),
        assistant("Sure, I can"),
        user("Why?"),
    ]
    assert history(a, task)[:2] == [
        ("user", "Block my card.", False),
        ("assistant", "Sure, I can", True),
    ]


def test_engine_history_shorter_than_the_stored_reply_cuts_it(replicas, mock):
    a, b = replicas
    task = new_task()
    turn(a, task, [SYSTEM, user("Block my card.")], LONG)
    heard = "Sure, I can block it right away,"
    turn(
        b,
        task,
        [SYSTEM, user("Block my card."), assistant(heard), user("Why?")],
        "Because.",
    )
    assert sent_upstream(mock) == [SYSTEM, user("Block my card."), assistant(heard), user("Why?")]
    assert history(a, task) == [
        ("user", "Block my card.", False),
        ("assistant", heard, True),
        ("user", "Why?", False),
        ("assistant", "Because.", False),
    ]
