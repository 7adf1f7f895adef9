"""Liveness, readiness and the model list."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.responses import JSONResponse, Response

from proxy.api.deps import CallerDep
from proxy.context.redis_faults import ADVICE
from proxy.services import Services, services
from proxy.settings import ECHO_MODEL

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Dependencies are reachable")
async def readyz(request: Request) -> JSONResponse:
    state = services(request)
    checks: dict[str, str] = {}
    ready = not state.shutting_down
    degraded = False
    if not ready:
        checks["server"] = "shutting down"
    history_check, history_ready = await _history_check(state)
    checks["history"] = history_check
    if history_ready is False:
        ready = False
    elif history_ready is None:
        # Chat still answers without Redis (statelessly); failing readiness would take
        # every replica out of service at once, unless the operator wants exactly that.
        if state.settings.ready_requires_history:
            ready = False
        else:
            degraded = True
    # Chat works without the database (keys are cached, transcripts queue up): report it,
    # but never take every replica out of service because of it.
    try:
        async with asyncio.timeout(1.0), state.db_engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"degraded: {type(exc).__name__}"
    return JSONResponse(
        {
            "status": ("degraded" if degraded else "ready") if ready else "not ready",
            "checks": checks,
        },
        status_code=200 if ready else 503,
    )


async def _history_check(state: Services) -> tuple[str, bool | None]:
    """What /readyz says of the history store, and whether it is ready (None: down).

    A configuration fault (``MOVED``, ``NOPERM``, ...) is not ready, by name: unlike an
    outage it never heals by itself, and a new rollout with it must not take traffic.
    """
    faults = state.store_guard.faults
    try:
        async with asyncio.timeout(1.0):
            await state.history.ping()  # a real write and read under the key prefix
    except Exception as exc:
        name = faults.note(exc)
        if name is not None:
            fault = faults.latest
            return (fault.describe() if fault else f"{name}: {ADVICE[name]}"), False
        return f"unavailable: {type(exc).__name__}", None
    recent = faults.recent()
    if recent is not None:  # the probe's key works, but turns met a fault (another slot)
        return recent.describe(), False
    return "ok", True


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry = services(request).metrics.registry
    # Rendered in a thread: a scrape never holds the event loop (and the streams on it).
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models", dependencies=[CallerDep], summary="Models this proxy serves")
async def list_models(request: Request) -> dict[str, Any]:
    router_ = services(request).router
    models: dict[str, dict[str, Any]] = {}
    default = router_.table.default_target
    if default is not None:
        try:
            for item in await router_.client.list_models(default):
                if isinstance(item.get("id"), str):
                    models[item["id"]] = item
        except Exception as exc:  # the list is a convenience; never fail on it
            log.warning("could not list the default upstream's models: %r", exc)
    for alias in router_.table.aliases:
        models.setdefault(alias, {"id": alias, "object": "model", "owned_by": "proxy"})
    models.setdefault(ECHO_MODEL, {"id": ECHO_MODEL, "object": "model", "owned_by": "proxy"})
    return {"object": "list", "data": list(models.values())}
