"""The admin API (bearer ``PROXY_ADMIN_TOKEN``): keys, profiles, routes and tasks."""

from __future__ import annotations

from fastapi import APIRouter

from proxy.api import admin_config, admin_knowledge, admin_tasks, admin_tools, admin_usage
from proxy.api.deps import AdminDep

router = APIRouter(prefix="/admin", dependencies=[AdminDep], tags=["admin"])
router.include_router(admin_config.router)
router.include_router(admin_tasks.router)
router.include_router(admin_tools.router)
router.include_router(admin_knowledge.router)
router.include_router(admin_usage.router)
