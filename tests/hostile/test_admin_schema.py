"""schemathesis against the admin API's own OpenAPI schema, on a running proxy.

Every ``/admin`` operation gets generated requests, valid (positive) and invalid
(negative) by its schema, sent with the admin token: none may answer 5xx, invalid
ones must be refused with a 4xx, and valid ones must answer as documented.
Bounded (``MAX_EXAMPLES`` per operation and mode) and derandomized: the same cases
every run.
"""

from __future__ import annotations

import time
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
)

from tests.hostile.conftest import ADMIN, ENVELOPE_FIELDS

MAX_EXAMPLES = 20
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _run(operation: Any, mode: GenerationMode, base_url: str, failures: list[str]) -> int:
    checks = [not_a_server_error]
    checks += [response_schema_conformance] if mode is GenerationMode.POSITIVE else []
    checks += [negative_data_rejection] if mode is GenerationMode.NEGATIVE else []
    sent = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal sent
        response = case.call(base_url=base_url, headers=AUTH, timeout=15)
        sent += 1
        if response.status_code >= 400:  # every refusal is an OpenAI envelope
            assert set(response.json()["error"]) == ENVELOPE_FIELDS, response.text
        case.validate_response(response, checks=checks, headers=AUTH)

    try:
        run()
    except Unsatisfiable:  # nothing the schema forbids (no parameters, free-form strings)
        assert mode is GenerationMode.NEGATIVE, operation.label
    except (Exception, BaseExceptionGroup) as exc:  # one report per operation and mode
        failures.append(f"{operation.label} [{mode.value}]: {type(exc).__name__}: {exc}"[:3000])
    return sent


def test_the_admin_api_honours_its_schema(make_proxy, migrated_database_url):
    """On SQLite and PostgreSQL (which refuses NUL in text: that was a 503 here)."""
    proxy = make_proxy(redis=True, admin_token=ADMIN, database_url=migrated_database_url)
    schema = schemathesis.openapi.from_url(proxy.url + "/openapi.json", timeout=10)
    schema = schema.include(path_regex="^/admin")
    started = time.monotonic()
    failures: list[str] = []
    sent = operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            sent += _run(operation, mode, proxy.url, failures)
    elapsed = time.monotonic() - started
    print(f"schemathesis: {operations} operations, {sent} requests, {elapsed:.1f}s")
    assert operations >= 30
    assert not failures, "\n\n".join(failures)
