"""Admin API: caller keys, profiles and routes (the logic is in ``proxy.admin``).

Database entities are managed here; config-declared ones (YAML / environment) are
listed with ``origin: "config"`` and refused with 409 on any change. Every change
refreshes this replica's catalog at once; other replicas pick it up within
``key_cache_seconds``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from proxy.admin.models import (
    KeyCreate,
    KeyCreated,
    KeyOut,
    KeyUpdate,
    ProfileCreate,
    ProfileIn,
    ProfileOut,
    RouteIn,
    RouteOut,
)
from proxy.api.admin_services import AdminServices

router = APIRouter()

ProfileName = Annotated[str, Path(max_length=64)]
Alias = Annotated[str, Path(max_length=128, description="The model name callers send.")]


# Keys.


@router.post(
    "/keys",
    summary="Create a caller key (the key is returned once)",
    response_model=KeyCreated,
    status_code=status.HTTP_201_CREATED,
)
async def create_key(body: KeyCreate, admin: AdminServices) -> KeyCreated:
    return await admin.keys.create(body)


@router.get("/keys", summary="List caller keys (config and database)", response_model=list[KeyOut])
async def list_keys(admin: AdminServices) -> list[KeyOut]:
    return await admin.keys.list()


@router.get("/keys/{key_id}", summary="One caller key", response_model=KeyOut)
async def get_key(key_id: str, admin: AdminServices) -> KeyOut:
    return await admin.keys.get(key_id)


@router.patch(
    "/keys/{key_id}",
    summary="Change a caller key's name, profile, rate limit or budgets (only the fields sent)",
    response_model=KeyOut,
)
async def update_key(key_id: str, body: KeyUpdate, admin: AdminServices) -> KeyOut:
    return await admin.keys.update(key_id, body)


@router.post(
    "/keys/{key_id}/revoke",
    summary="Revoke a caller key (it stops working at once)",
    response_model=KeyOut,
)
async def revoke_key(key_id: str, admin: AdminServices) -> KeyOut:
    return (await admin.keys.revoke(key_id)).key


@router.delete(
    "/keys/{key_id}",
    summary="Delete a caller key",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_key(key_id: str, admin: AdminServices) -> None:
    await admin.keys.delete(key_id)


# Profiles.


@router.post(
    "/profiles",
    summary="Create a profile",
    response_model=ProfileOut,
    status_code=status.HTTP_201_CREATED,
)
async def create_profile(body: ProfileCreate, admin: AdminServices) -> ProfileOut:
    return await admin.profiles.create(body)


@router.get(
    "/profiles", summary="List profiles (config and database)", response_model=list[ProfileOut]
)
async def list_profiles(admin: AdminServices) -> list[ProfileOut]:
    return await admin.profiles.list()


@router.get("/profiles/{name}", summary="One profile", response_model=ProfileOut)
async def get_profile(name: ProfileName, admin: AdminServices) -> ProfileOut:
    return await admin.profiles.get(name)


@router.put("/profiles/{name}", summary="Replace a profile's settings", response_model=ProfileOut)
async def replace_profile(name: ProfileName, body: ProfileIn, admin: AdminServices) -> ProfileOut:
    return await admin.profiles.replace(name, body)


@router.delete(
    "/profiles/{name}",
    summary="Delete a profile (keys using it fall back to no profile)",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_profile(name: ProfileName, admin: AdminServices) -> None:
    await admin.profiles.delete(name)


# Routes.


@router.put(
    "/routes/{alias:path}",
    summary="Create or replace a route (201 when created)",
    response_model=RouteOut,
    responses={201: {"model": RouteOut, "description": "Created"}},
)
async def put_route(
    alias: Alias, body: RouteIn, response: Response, admin: AdminServices
) -> RouteOut:
    put = await admin.routes.put(alias, body)
    if put.created:
        response.status_code = status.HTTP_201_CREATED
    return put.route


@router.get("/routes", summary="List routes (config and database)", response_model=list[RouteOut])
async def list_routes(admin: AdminServices) -> list[RouteOut]:
    return await admin.routes.list()


@router.get("/routes/{alias:path}", summary="One route", response_model=RouteOut)
async def get_route(alias: Alias, admin: AdminServices) -> RouteOut:
    return await admin.routes.get(alias)


@router.delete(
    "/routes/{alias:path}",
    summary="Delete a route",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_route(alias: Alias, admin: AdminServices) -> None:
    await admin.routes.delete(alias)
