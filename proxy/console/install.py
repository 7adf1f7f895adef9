"""Mounting the console on the application."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from proxy.console import manage, pages, usage_page
from proxy.console.web import PREFIX, LoginRequired, build_templates


async def _to_login(request: Request, exc: Exception) -> Response:
    return RedirectResponse(PREFIX + "/login", status_code=303)


def install_console(app: FastAPI) -> None:
    from importlib.resources import files

    app.state.console_templates = build_templates()
    static = files("proxy.console") / "static"
    app.mount(PREFIX + "/static", StaticFiles(directory=str(static)), name="console-static")
    app.add_exception_handler(LoginRequired, _to_login)
    app.include_router(pages.router)
    app.include_router(usage_page.router)
    app.include_router(manage.router)
