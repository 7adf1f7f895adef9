"""One admin service layer: the HTTP API (``proxy.api.admin*``), the CLI
(``proxy keys | profiles | knowledge``) and the console all manage keys, profiles,
routes, tools and knowledge bases through these services.

    admin = Admin(AdminStore(settings, sessions, refresh_catalog=catalog.refresh))
    created = await admin.keys.create(KeyCreate(name="engine"))

Services take validated request models and return response models; failures are
``proxy.errors`` exceptions (NotFound, Conflict, InvalidRequest, ServiceUnavailable).
Knowledge bases already have their service, ``proxy.knowledge.ingest.IngestService``.
"""

from __future__ import annotations

from proxy.admin.keys import KeyAdmin, Revoked
from proxy.admin.profiles import ProfileAdmin
from proxy.admin.routes import PutRoute, RouteAdmin
from proxy.admin.store import AdminStore, read_only
from proxy.admin.tools import ToolAdmin

__all__ = [
    "Admin",
    "AdminStore",
    "KeyAdmin",
    "ProfileAdmin",
    "PutRoute",
    "Revoked",
    "RouteAdmin",
    "ToolAdmin",
    "read_only",
]


class Admin:
    """Every admin service over one store."""

    def __init__(self, store: AdminStore) -> None:
        self.store = store
        self.keys = KeyAdmin(store)
        self.profiles = ProfileAdmin(store)
        self.routes = RouteAdmin(store)
        self.tools = ToolAdmin(store)
