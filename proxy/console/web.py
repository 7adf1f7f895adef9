"""What every console page shares: templates, the session check, forms and CSRF."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import jinja2
from fastapi import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from proxy.api.chat import read_body
from proxy.console.session import COOKIE, Session, SessionSigner
from proxy.errors import InvalidRequest, PermissionDenied
from proxy.services import services

PREFIX = "/console"
MAX_FORM_BYTES = 2 * 1024 * 1024  # a pasted knowledge document


class LoginRequired(Exception):
    """No valid console session: the browser is sent to the login page."""


def build_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("proxy.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["ms"] = lambda v: "" if v is None else f"{v:,.0f} ms"
    return env


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def signer(request: Request) -> SessionSigner | None:
    token = services(request).settings.admin_token
    return SessionSigner(token.get_secret_value()) if token is not None else None


async def current_session(request: Request) -> Session:
    """The console session, or ``LoginRequired``: a dependency of every page."""
    sessions = signer(request)
    session = sessions.read(request.cookies.get(COOKIE)) if sessions else None
    if session is None:
        raise LoginRequired()
    return session


@dataclass(slots=True)
class Form:
    fields: dict[str, str]

    def text(self, name: str) -> str:
        return self.fields.get(name, "").strip()

    def optional(self, name: str) -> str | None:
        return self.text(name) or None

    def number(self, name: str, kind: type = int) -> Any:
        value = self.text(name)
        if not value:
            return None
        try:
            return kind(value)
        except ValueError:
            raise InvalidRequest(f"{name}: {value!r} is not a number", param=name) from None

    def names(self, name: str) -> list[str]:
        return [item.strip() for item in self.text(name).split(",") if item.strip()]


async def read_form(request: Request, session: Session) -> Form:
    """A posted form, after its CSRF token is checked."""
    raw = await read_body(request, MAX_FORM_BYTES)
    parsed = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
    fields = {name: values[-1] for name, values in parsed.items()}
    if not SessionSigner.csrf_matches(session, fields.get("csrf")):
        raise PermissionDenied("the form is stale or forged (CSRF check failed); reload the page")
    return Form(fields)


def page(
    request: Request, template: str, session: Session | None, status: int = 200, **context: Any
) -> HTMLResponse:
    env: jinja2.Environment = request.app.state.console_templates
    html = env.get_template(template).render(
        prefix=PREFIX,
        csrf=session.csrf if session else "",
        section=template.split(".")[0],
        flash=request.query_params.get("flash"),
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def back(path: str, flash: str | None = None) -> Response:
    """After a change: back to a page (303, so a reload does not post again)."""
    from urllib.parse import urlencode

    target = PREFIX + path + (("?" + urlencode({"flash": flash})) if flash else "")
    return RedirectResponse(target, status_code=303)


# Everything is served from this origin: no external script, style, frame or form target.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
