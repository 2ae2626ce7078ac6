"""Who may read the receiver: its read API (``GET /incidents``, ``GET /incidents/{id}``: alert
labels, run inputs, error text) and its documents (``/openapi.json``, ``/docs``, ``/redoc``).

Prefect OSS has no users and the receiver listens beside it, so the read side is closed unless a
token is configured, like each webhook source:

* ``SIAGA_API_TOKEN`` unset: those paths answer 404 and say how to serve them. Nothing is open by
  default.
* Proof: ``Authorization: Bearer <token>``, or ``Basic`` with the token as the password (any user
  name), which is what a browser sends once it has asked for it: the documents open in a browser.
* Missing or wrong: 401 with a challenge, ``Bearer`` for the API and ``Basic`` for the documents
  (so a browser asks for the password). Comma-separated tokens are all accepted (rotation); every
  comparison is constant-time and looks at every token.

``GET /healthz`` stays open for load balancers: it shows queue counts, no alert data.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

__all__ = ["BEARER", "ENV", "ReadAccess", "offered_token"]

ENV = "SIAGA_API_TOKEN"
REALM = "Siaga receiver"

BEARER = HTTPBearer(auto_error=False, scheme_name="SiagaApiToken", description=f"the value of {ENV}")
"""The read API's scheme as the OpenAPI document declares it (the check itself is `ReadAccess`)."""


def offered_token(authorization: str | None) -> str | None:
    """The token in an ``Authorization`` header: a bearer token, or a Basic password; None if
    there is none or the header is malformed."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        _, colon, password = decoded.partition(":")
        return password if colon and password else None
    return None


@dataclass(frozen=True)
class ReadAccess:
    """The check, as FastAPI dependencies: `api` for the JSON endpoints, `browser` for the
    documents. Built from the configured tokens (none: nothing is served)."""

    tokens: tuple[SecretStr, ...] = ()

    @classmethod
    def of(cls, tokens: Sequence[SecretStr]) -> ReadAccess:
        return cls(tuple(tokens))

    def check(self, authorization: str | None, challenge: str) -> None:
        if not self.tokens:
            raise HTTPException(404, f"the read API is not served: set {ENV} to serve it (then send the token as a bearer token)")
        offered = offered_token(authorization)
        if offered is not None:
            matched = False
            for token in self.tokens:  # every token, so the time says nothing about which
                matched |= hmac.compare_digest(offered.encode(), token.get_secret_value().encode())
            if matched:
                return
        what = "wrong" if offered is not None else "missing"
        raise HTTPException(
            401, f"the token is {what}: send the value of {ENV} as `Authorization: Bearer <token>`",
            {"WWW-Authenticate": f'{challenge} realm="{REALM}"'},
        )

    async def api(self, request: Request, _: HTTPAuthorizationCredentials | None = Security(BEARER)) -> None:
        self.check(request.headers.get("authorization"), "Bearer")

    async def browser(self, request: Request) -> None:
        self.check(request.headers.get("authorization"), "Basic")
