"""Real HTTP servers on 127.0.0.1 standing in for the payment and status-page providers, each
speaking its provider's wire format (paths, auth, bodies, error shapes), with faults to script:

* `KillSwitch`: a company payment switch as `siaga.integrations.payment_switch` documents it;
* `FakeStripe`: Stripe's accounts, balance and payouts API, its form encoding, its error shape
  ``{"error": {"type", "code", "message", "param"}}`` and its Idempotency-Key replay;
* `FakeStatuspage`: Statuspage's v1 incidents API (``Authorization: OAuth``, ``metadata``).

`fail(method, path, *faults)` queues faults for the next requests to that path: `Reply` (a status,
body and headers, given before acting or, with ``after=True``, after acting), `Drop` (close the
connection without an answer, before or after acting) and `Slow` (wait, then answer normally).
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[-1]


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    after: bool = False  # act first, then answer this instead


@dataclass
class Drop:
    after: bool = False  # act first, then close the connection unanswered


@dataclass
class Slow:
    seconds: float


Answer = tuple[int, Any, dict[str, str]]


class StandIn:
    """A threaded HTTP server whose `route` answers every request; records them all."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[Request] = []
        self.faults: dict[tuple[str, str], list[Reply | Drop | Slow]] = {}
        self.lock = threading.RLock()

    def fail(self, method: str, path: str, *faults: Reply | Drop | Slow) -> None:
        with self.lock:
            self.faults.setdefault((method, path), []).extend(faults)

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def route(self, request: Request) -> Answer:  # pragma: no cover - every stand-in has its own
        raise NotImplementedError

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        request = Request(
            handler.command,
            parts.path,
            parse_qs(parts.query),
            dict(handler.headers.items()),
            handler.rfile.read(length) if length else b"",
        )
        with self.lock:
            self.requests.append(request)
            queue = self.faults.get((request.method, request.path)) or []
            fault = queue.pop(0) if queue else None
        if isinstance(fault, Slow):
            time.sleep(fault.seconds)
        if isinstance(fault, (Reply, Drop)) and not fault.after:
            answer = None
        else:
            answer = self.route(request)
        if isinstance(fault, Drop):
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if isinstance(fault, Reply):
            answer = (fault.status, fault.body, fault.headers)
        assert answer is not None
        status, body, headers = answer
        data = b"" if body is None else json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass  # the caller is gone (killed while we held the answer back)

    @contextmanager
    def running(self) -> Iterator[StandIn]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = (
                True  # headers and body go out as two writes on a kept-alive socket
            )

            def _any(self) -> None:
                owner._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


# --- a company payment switch -------------------------------------------------------------------


class KillSwitch(StandIn):
    """POST /freeze and /unfreeze (JSON bodies), GET /status ({"freezes": [...]}), GET /preview.

    `hold` makes a freeze take effect, set `freeze_arrived`, and answer only when `release` is set
    (or after 60 s): the window in which a test kills the caller. `echo_auth` puts the credential
    it was given into its answers, as a careless switch might."""

    def __init__(self, token: str, *, status: bool = True, echo_auth: bool = False) -> None:
        super().__init__()
        self.token = token
        self.has_status = status
        self.echo_auth = echo_auth
        self.active: list[dict[str, Any]] = []
        self.freezes: list[dict[str, Any]] = []  # every freeze that took effect
        self.unfreezes: list[dict[str, Any]] = []
        self.hold = False
        self.freeze_arrived = threading.Event()
        self.release = threading.Event()
        self.merchants: dict[str, dict[str, Any]] = {
            "m-001": {"pending_payouts": 4, "value": "1250000.00", "methods": ["qris", "card"]},
            "m-002": {"pending_payouts": 1, "value": "300000.50", "methods": ["card"]},
            "m-003": {"pending_payouts": 0, "value": "0", "methods": ["ewallet"]},
        }

    def route(self, request: Request) -> Answer:
        presented = request.header("Authorization") or ""
        if presented != f"Bearer {self.token}":
            return 401, {"error": f"unauthorized: {presented!r} is not a switch token"}, {}
        echo = {"requested_with": presented} if self.echo_auth else {}
        if request.method == "POST" and request.path == "/freeze":
            body = request.json()
            if not body.get("reason"):
                return 422, {"error": "a freeze needs a reason"}, {}
            entry = {
                "scope": body["scope"],
                "key": body.get("idempotency_key"),
                "reason": body["reason"],
            }
            with self.lock:
                self.freezes.append(entry)
                self.active.append(entry)
            if self.hold:
                self.freeze_arrived.set()
                self.release.wait(60)
            return 200, {"frozen": True, "id": f"frz_{len(self.freezes)}", **echo}, {}
        if request.method == "POST" and request.path == "/unfreeze":
            body = request.json()
            with self.lock:
                self.unfreezes.append(body)
                self.active = [
                    a
                    for a in self.active
                    if a["scope"] != body["scope"]
                    or (body.get("freeze_key") and a["key"] != body["freeze_key"])
                ]
            return 200, {"unfrozen": True, **echo}, {}
        if request.method == "GET" and request.path == "/status" and self.has_status:
            with self.lock:
                return 200, {"freezes": list(self.active)}, {}
        if request.method == "GET" and request.path == "/preview":
            kind = request.arg("scope")
            chosen = {
                k: v
                for k, v in self.merchants.items()
                if kind in ("all", "payouts")
                or (kind == "merchants" and k in request.query.get("merchant", []))
                or (kind == "payment_method" and request.arg("payment_method") in v["methods"])
            }
            total = sum(float(v["value"]) for v in chosen.values())
            return (
                200,
                {
                    "merchants": sorted(chosen),
                    "pending_payouts": sum(v["pending_payouts"] for v in chosen.values()),
                    "value": f"{total:.2f}",
                    "currency": "IDR",
                },
                {},
            )
        return 404, {"error": f"no route {request.method} {request.path}"}, {}


# --- Stripe -------------------------------------------------------------------------------------


def stripe_error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> Reply:
    error = {
        "type": type,
        "message": message,
        **({"code": code} if code else {}),
        **({"param": param} if param else {}),
    }
    return Reply(status, {"error": error})


class FakeStripe(StandIn):
    """Connected accounts, balances and payouts of a Stripe platform."""

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.accounts: dict[str, dict[str, Any]] = {}
        self.balances: dict[str, dict[str, Any]] = {}
        self.payouts: dict[str, list[dict[str, Any]]] = {}
        self.updates: list[tuple[str, dict[str, str]]] = []  # updates that took effect
        self.replays: dict[str, tuple[str, Answer]] = {}

    def add_account(
        self,
        account_id: str,
        interval: str = "daily",
        *,
        available: int = 0,
        pending: int = 0,
        currency: str = "usd",
        pending_payouts: int = 0,
        **schedule: Any,
    ) -> None:
        self.accounts[account_id] = {
            "id": account_id,
            "object": "account",
            "type": "custom",
            "metadata": {},
            "settings": {
                "payouts": {"schedule": {"delay_days": 2, "interval": interval, **schedule}}
            },
        }
        self.balances[account_id] = {
            "object": "balance",
            "available": [{"amount": available, "currency": currency}],
            "pending": [{"amount": pending, "currency": currency}],
            "livemode": False,
        }
        self.payouts[account_id] = [
            {"id": f"po_{account_id}_{i}", "object": "payout", "status": "pending", "amount": 100}
            for i in range(pending_payouts)
        ]

    def interval(self, account_id: str) -> str:
        return str(self.accounts[account_id]["settings"]["payouts"]["schedule"]["interval"])

    def route(self, request: Request) -> Answer:
        presented = request.header("Authorization") or ""
        if presented != f"Bearer {self.api_key}":
            reply = stripe_error(
                401, f"Invalid API Key provided: {presented.removeprefix('Bearer ')}"
            )
            return reply.status, reply.body, {}
        parts = request.path.strip("/").split("/")
        if request.method == "GET" and parts == ["v1", "accounts"]:
            return (
                200,
                self._page(
                    sorted(self.accounts.values(), key=lambda a: a["id"]), request, "/v1/accounts"
                ),
                {},
            )
        if parts[:2] == ["v1", "accounts"] and len(parts) == 3:
            account = self.accounts.get(parts[2])
            if account is None:
                reply = stripe_error(
                    404, f"No such account: '{parts[2]}'", code="resource_missing", param="account"
                )
                return reply.status, reply.body, {}
            if request.method == "GET":
                return 200, account, {}
            if request.method == "POST":
                return self._update(account, request)
        if request.method == "GET" and parts == ["v1", "balance"]:
            return (
                200,
                self.balances.get(
                    request.header("Stripe-Account") or "", {"available": [], "pending": []}
                ),
                {},
            )
        if request.method == "GET" and parts == ["v1", "payouts"]:
            found = [
                p
                for p in self.payouts.get(request.header("Stripe-Account") or "", [])
                if request.arg("status") in (None, p["status"])
            ]
            return 200, self._page(found, request, "/v1/payouts"), {}
        reply = stripe_error(404, f"Unrecognized request URL ({request.method}: {request.path})")
        return reply.status, reply.body, {}

    def _page(self, items: list[dict[str, Any]], request: Request, url: str) -> dict[str, Any]:
        limit = int(request.arg("limit", "10") or 10)
        after = request.arg("starting_after")
        if after:
            items = items[[i["id"] for i in items].index(after) + 1 :]
        return {"object": "list", "url": url, "has_more": len(items) > limit, "data": items[:limit]}

    def _update(self, account: dict[str, Any], request: Request) -> Answer:
        form = request.form()
        key = request.header("Idempotency-Key")
        with self.lock:
            if key and key in self.replays:
                body, answer = self.replays[key]
                if body != request.body.decode():
                    reply = stripe_error(
                        400,
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                        type="idempotency_error",
                    )
                    return reply.status, reply.body, {}
                return answer[0], answer[1], {"Idempotent-Replayed": "true"}
            schedule = account["settings"]["payouts"]["schedule"]
            prefix = "settings[payouts][schedule]["
            for name, value in form.items():
                if name.startswith(prefix):
                    field_name = name[len(prefix) :].split("]")[0]
                    if field_name == "interval" and value not in (
                        "daily",
                        "weekly",
                        "monthly",
                        "manual",
                    ):
                        reply = stripe_error(
                            400,
                            f"Invalid interval: {value}",
                            code="parameter_invalid_string",
                            param="settings[payouts][schedule][interval]",
                        )
                        return reply.status, reply.body, {}
                    schedule[field_name] = value
                elif name.startswith("metadata["):
                    meta_key = name[len("metadata[") : -1]
                    if value == "":
                        account["metadata"].pop(meta_key, None)
                    else:
                        account["metadata"][meta_key] = value
            self.updates.append((account["id"], form))
            answer: Answer = (200, json.loads(json.dumps(account)), {})
            if key:
                self.replays[key] = (request.body.decode(), answer)
            return answer


# --- Statuspage ---------------------------------------------------------------------------------


class FakeStatuspage(StandIn):
    """One page's incidents: create, update, resolve, list unresolved, read one."""

    def __init__(self, api_key: str, page_id: str = "pg7x2demo") -> None:
        super().__init__()
        self.api_key = api_key
        self.page_id = page_id
        self.incidents: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []

    def created(self) -> list[dict[str, Any]]:
        return [self.incidents[i] for i in self.order]

    def route(self, request: Request) -> Answer:
        if request.header("Authorization") != f"OAuth {self.api_key}":
            return 401, {"message": "Could not authenticate"}, {}
        parts = request.path.strip("/").split("/")
        if parts[:3] != ["v1", "pages", self.page_id] or len(parts) < 4 or parts[3] != "incidents":
            return 404, {"message": "The requested resource could not be found."}, {}
        rest = parts[4:]
        if request.method == "POST" and not rest:
            return self._create(request.json().get("incident") or {})
        if request.method == "GET" and rest == ["unresolved"]:
            page, per_page = (
                int(request.arg("page", "1") or 1),
                int(request.arg("per_page", "100") or 100),
            )
            open_ = [
                self.incidents[i]
                for i in reversed(self.order)
                if self.incidents[i]["status"] != "resolved"
            ]
            return 200, open_[(page - 1) * per_page : page * per_page], {}
        if len(rest) == 1 and rest[0] in self.incidents:
            if request.method == "GET":
                return 200, self.incidents[rest[0]], {}
            if request.method == "PATCH":
                return self._update(self.incidents[rest[0]], request.json().get("incident") or {})
        return 404, {"message": "The requested resource could not be found."}, {}

    def _create(self, spec: dict[str, Any]) -> Answer:
        if not spec.get("name"):
            return 422, {"error": ["Name can't be blank"]}, {}
        incident_id = secrets.token_hex(6)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        incident = {
            "id": incident_id,
            "page_id": self.page_id,
            "name": spec["name"],
            "status": spec.get("status", "investigating"),
            "impact": spec.get("impact_override") or "none",
            "impact_override": spec.get("impact_override"),
            "metadata": spec.get("metadata") or {},
            "shortlink": f"https://stspg.io/{incident_id}",
            "created_at": now,
            "components": [],
            "incident_updates": [],
            "deliver_notifications": spec.get("deliver_notifications", True),
        }
        with self.lock:
            self.incidents[incident_id] = incident
            self.order.append(incident_id)
            self._apply(incident, spec, now)
        return 201, incident, {}

    def _update(self, incident: dict[str, Any], spec: dict[str, Any]) -> Answer:
        with self.lock:
            for name in ("name", "status"):
                if name in spec:
                    incident[name] = spec[name]
            if spec.get("impact_override"):
                incident["impact"] = incident["impact_override"] = spec["impact_override"]
            if isinstance(spec.get("metadata"), dict):
                incident["metadata"] = {**incident["metadata"], **spec["metadata"]}
            self._apply(incident, spec, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return 200, incident, {}

    def _apply(self, incident: dict[str, Any], spec: dict[str, Any], now: str) -> None:
        statuses = {
            i: "operational" for i in spec.get("component_ids") or []
        }  # affected, status as is
        statuses.update(spec.get("components") or {})
        for component_id, status in statuses.items():
            current = next((c for c in incident["components"] if c["id"] == component_id), None)
            if current is None:
                incident["components"].append(
                    {"id": component_id, "name": component_id, "status": status}
                )
            elif component_id in (spec.get("components") or {}):
                current["status"] = status
        if spec.get("body") or "status" in spec:
            incident["incident_updates"].insert(
                0,
                {
                    "id": secrets.token_hex(6),
                    "incident_id": incident["id"],
                    "status": incident["status"],
                    "body": spec.get("body", ""),
                    "created_at": now,
                    "deliver_notifications": spec.get("deliver_notifications", True),
                },
            )


def switch_connection(switch: KillSwitch, **overrides: Any) -> dict[str, Any]:
    """A `payment_switch` connection to `switch`, its bearer the secret ``switch-token``."""
    return {"type": "payment_switch", "base_url": switch.url, "auth": {"bearer": "secret://switch-token"}, **overrides}
