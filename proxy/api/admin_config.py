"""Admin API: caller keys, profiles and routes.

Database entities are managed here; config-declared ones (YAML / environment) are
listed with ``origin: "config"`` and refused with 409 on any change. Every change
refreshes this replica's catalog at once; other replicas pick it up within
``key_cache_seconds``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from proxy.api.admin_db import declared_in_config, refresh_catalog, transaction
from proxy.api.schemas import (
    CONFIG_KEY_PREFIX,
    KeyCreate,
    KeyCreated,
    KeyOut,
    ProfileCreate,
    ProfileIn,
    ProfileOut,
    RouteIn,
    RouteOut,
)
from proxy.db.repositories import KeyRepository, ProfileRepository, RouteRepository
from proxy.errors import Conflict, InvalidRequest, NotFound

router = APIRouter()

ProfileName = Annotated[str, Path(max_length=64)]
Alias = Annotated[str, Path(max_length=128, description="The model name callers send.")]


def _read_only(kind: str, name: str) -> Conflict:
    return Conflict(f"{kind} {name!r} is declared in the configuration: change it there, not here")


# Keys.


def _refuse_config_key(request: Request, key_id: str) -> None:
    if key_id.startswith(CONFIG_KEY_PREFIX):
        name = key_id.removeprefix(CONFIG_KEY_PREFIX)
        if declared_in_config(request, "key", name):
            raise _read_only("key", name)
        raise NotFound(f"no key {key_id!r}")


@router.post(
    "/keys",
    summary="Create a caller key (the key is returned once)",
    response_model=KeyCreated,
    status_code=status.HTTP_201_CREATED,
)
async def create_key(body: KeyCreate, request: Request) -> KeyCreated:
    if declared_in_config(request, "key", body.name):
        raise Conflict(f"a config-declared key is named {body.name!r}: choose another name")
    async with transaction(request) as session:
        if body.profile is not None and not (
            declared_in_config(request, "profile", body.profile)
            or await ProfileRepository(session).get(body.profile) is not None
        ):
            raise InvalidRequest(f"no profile {body.profile!r}", param="profile", status=422)
        key, plain = await KeyRepository(session).create(
            body.name,
            profile_name=body.profile,
            allow_profile_override=body.allow_profile_override,
            app_id=body.app_id,
            rate_limit_per_minute=body.rate_limit_per_minute,
            max_tokens_per_day=body.max_tokens_per_day,
            max_cost_per_day=body.max_cost_per_day,
            expires_at=body.expires_at,
        )
        created = KeyCreated(**KeyOut.from_row(key).model_dump(), key=plain)
    await refresh_catalog(request)
    return created


@router.get("/keys", summary="List caller keys (config and database)", response_model=list[KeyOut])
async def list_keys(request: Request) -> list[KeyOut]:
    async with transaction(request) as session:
        stored = await KeyRepository(session).list_all()
    config = [KeyOut.from_spec(spec) for spec in request.app.state.settings.keys]
    return config + [KeyOut.from_row(key) for key in stored]


@router.get("/keys/{key_id}", summary="One caller key", response_model=KeyOut)
async def get_key(key_id: str, request: Request) -> KeyOut:
    if key_id.startswith(CONFIG_KEY_PREFIX):
        name = key_id.removeprefix(CONFIG_KEY_PREFIX)
        for spec in request.app.state.settings.keys:
            if spec.name == name:
                return KeyOut.from_spec(spec)
        raise NotFound(f"no key {key_id!r}")
    async with transaction(request) as session:
        key = await KeyRepository(session).get(key_id)
        if key is None:
            raise NotFound(f"no key {key_id!r}")
        return KeyOut.from_row(key)


@router.post(
    "/keys/{key_id}/revoke",
    summary="Revoke a caller key (it stops working at once)",
    response_model=KeyOut,
)
async def revoke_key(key_id: str, request: Request) -> KeyOut:
    _refuse_config_key(request, key_id)
    async with transaction(request) as session:
        key = await KeyRepository(session).revoke(key_id)
        if key is None:
            raise NotFound(f"no key {key_id!r}")
        revoked = KeyOut.from_row(key)
    await refresh_catalog(request)
    return revoked


@router.delete(
    "/keys/{key_id}",
    summary="Delete a caller key",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_key(key_id: str, request: Request) -> None:
    _refuse_config_key(request, key_id)
    async with transaction(request) as session:
        if not await KeyRepository(session).delete(key_id):
            raise NotFound(f"no key {key_id!r}")
    await refresh_catalog(request)


# Profiles.


@router.post(
    "/profiles",
    summary="Create a profile",
    response_model=ProfileOut,
    status_code=status.HTTP_201_CREATED,
)
async def create_profile(body: ProfileCreate, request: Request) -> ProfileOut:
    if declared_in_config(request, "profile", body.name):
        raise _read_only("profile", body.name)
    async with transaction(request) as session:
        profiles = ProfileRepository(session)
        if await profiles.get(body.name) is not None:
            raise Conflict(f"profile {body.name!r} exists: PUT /admin/profiles/{body.name}")
        created = ProfileOut.from_row(await profiles.create(**body.model_dump()))
    await refresh_catalog(request)
    return created


@router.get(
    "/profiles", summary="List profiles (config and database)", response_model=list[ProfileOut]
)
async def list_profiles(request: Request) -> list[ProfileOut]:
    config = request.app.state.settings.profiles
    async with transaction(request) as session:
        stored = await ProfileRepository(session).list_all()
    # A config declaration shadows a database profile of the same name (as in the catalog).
    return [ProfileOut.from_spec(name, spec) for name, spec in sorted(config.items())] + [
        ProfileOut.from_row(profile) for profile in stored if profile.name not in config
    ]


@router.get("/profiles/{name}", summary="One profile", response_model=ProfileOut)
async def get_profile(name: ProfileName, request: Request) -> ProfileOut:
    spec = request.app.state.settings.profiles.get(name)
    if spec is not None:
        return ProfileOut.from_spec(name, spec)
    async with transaction(request) as session:
        profile = await ProfileRepository(session).get(name)
        if profile is None:
            raise NotFound(f"no profile {name!r}")
        return ProfileOut.from_row(profile)


@router.put("/profiles/{name}", summary="Replace a profile's settings", response_model=ProfileOut)
async def replace_profile(name: ProfileName, body: ProfileIn, request: Request) -> ProfileOut:
    if declared_in_config(request, "profile", name):
        raise _read_only("profile", name)
    async with transaction(request) as session:
        profile = await ProfileRepository(session).update(name, **body.model_dump())
        if profile is None:
            raise NotFound(f"no profile {name!r}: create it with POST /admin/profiles")
        replaced = ProfileOut.from_row(profile)
    await refresh_catalog(request)
    return replaced


@router.delete(
    "/profiles/{name}",
    summary="Delete a profile (keys using it fall back to no profile)",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_profile(name: ProfileName, request: Request) -> None:
    if declared_in_config(request, "profile", name):
        raise _read_only("profile", name)
    async with transaction(request) as session:
        if not await ProfileRepository(session).delete(name):
            raise NotFound(f"no profile {name!r}")
    await refresh_catalog(request)


# Routes.


@router.put(
    "/routes/{alias:path}",
    summary="Create or replace a route (201 when created)",
    response_model=RouteOut,
    responses={201: {"model": RouteOut, "description": "Created"}},
)
async def put_route(alias: Alias, body: RouteIn, request: Request, response: Response) -> RouteOut:
    if declared_in_config(request, "route", alias):
        raise _read_only("route", alias)
    if not alias.strip() or alias != alias.strip():
        raise InvalidRequest("a route alias must not be blank or padded", param="alias", status=422)
    targets = [target.model_dump() for target in body.targets]
    async with transaction(request) as session:
        routes = RouteRepository(session)
        if await routes.get(alias) is None:
            response.status_code = status.HTTP_201_CREATED
        stored = RouteOut.from_row(await routes.put(alias, targets))
    await refresh_catalog(request)
    return stored


@router.get("/routes", summary="List routes (config and database)", response_model=list[RouteOut])
async def list_routes(request: Request) -> list[RouteOut]:
    config = request.app.state.settings.routes
    async with transaction(request) as session:
        stored = await RouteRepository(session).list_all()
    # Config-declared aliases win over database ones (as in the route table).
    return [RouteOut.from_spec(alias, route) for alias, route in sorted(config.items())] + [
        RouteOut.from_row(route) for route in stored if route.alias not in config
    ]


@router.get("/routes/{alias:path}", summary="One route", response_model=RouteOut)
async def get_route(alias: Alias, request: Request) -> RouteOut:
    config = request.app.state.settings.routes.get(alias)
    if config is not None:
        return RouteOut.from_spec(alias, config)
    async with transaction(request) as session:
        route = await RouteRepository(session).get(alias)
        if route is None:
            raise NotFound(f"no route {alias!r}")
        return RouteOut.from_row(route)


@router.delete(
    "/routes/{alias:path}",
    summary="Delete a route",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def delete_route(alias: Alias, request: Request) -> None:
    if declared_in_config(request, "route", alias):
        raise _read_only("route", alias)
    async with transaction(request) as session:
        if not await RouteRepository(session).delete(alias):
            raise NotFound(f"no route {alias!r}")
    await refresh_catalog(request)
