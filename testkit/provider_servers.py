"""Local stand-ins for the notification providers, on real sockets.

`providers()` starts one threaded HTTP server that speaks, under path prefixes, the documented wire
formats of Slack's Web API and incoming webhooks, PagerDuty's Events API v2, Teams' Workflows
webhooks and a plain JSON endpoint (for Apprise's ``json://``): their success answers, their error
shapes, and whatever a test scripts on top (429 with Retry-After, 5xx bursts, slow answers,
dropped connections). `smtp_server()` runs aiosmtpd on loopback with STARTTLS and AUTH required.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SLACK_CHANNELS = {
    "#inc-payments": "C0PAYMENTS", "#war-room": "C0WARROOM",
    # the bundled runbooks' channels
    "#inc-region": "C0REGION", "#inc-breach": "C0BREACH", "#war-room-social": "C0SOCIAL",
}
SLACK_WEBHOOK_PATH = "/slack/services/T0001/B0001/"
TEAMS_WEBHOOK_PATH = "/teams/workflows/"
PAGERDUTY_PATH = "/pagerduty/v2/enqueue"


@dataclass
class Reply:
    """One scripted answer: a status and body, after `delay` seconds; `drop` closes the
    connection without answering."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Providers:
    """The stand-ins' state: what they were sent, and what to answer next."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    script: dict[str, list[Reply]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    slack_token: str = ""
    slack_webhook: str = ""
    teams_webhook: str = ""
    _ts: int = 0

    def answer(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to `path` with `replies`, then as the provider would."""
        self.script.setdefault(path, []).extend(replies)

    def calls(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    # where each provider is reached, for connections.yaml
    @property
    def slack_api(self) -> str:
        return f"{self.url}/slack/api"

    @property
    def slack_webhook_url(self) -> str:
        return f"{self.url}{SLACK_WEBHOOK_PATH}{self.slack_webhook}"

    @property
    def teams_webhook_url(self) -> str:
        return f"{self.url}{TEAMS_WEBHOOK_PATH}{self.teams_webhook}"

    @property
    def pagerduty_url(self) -> str:
        return f"{self.url}{PAGERDUTY_PATH}"

    def default(self, request: Request) -> Reply:
        if request.path == "/slack/api/chat.postMessage":
            return self._slack_post(request)
        if request.path.startswith(SLACK_WEBHOOK_PATH):
            return self._slack_webhook(request)
        if request.path == PAGERDUTY_PATH:
            return _pagerduty(request)
        if request.path.startswith(TEAMS_WEBHOOK_PATH):
            return self._teams(request)
        if request.path.startswith("/json/"):
            return Reply(200, {"ok": True})
        return Reply(404, {"error": "no such path"})

    def _slack_post(self, request: Request) -> Reply:
        # Web API errors are HTTP 200 with ok: false.
        if request.headers.get("Authorization") != f"Bearer {self.slack_token}":
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        try:
            body = request.json()
        except ValueError:
            return Reply(200, {"ok": False, "error": "invalid_json"})
        channel = SLACK_CHANNELS.get(body.get("channel", ""), body.get("channel"))
        if channel not in SLACK_CHANNELS.values():
            return Reply(200, {"ok": False, "error": "channel_not_found"})
        if not body.get("text") and not body.get("blocks"):
            return Reply(200, {"ok": False, "error": "no_text"})
        self._ts += 1
        ts = f"{int(time.time())}.{self._ts:06d}"
        message = {
            "type": "message",
            "text": body.get("text"),
            "ts": ts,
            "blocks": body.get("blocks"),
        }
        if body.get("thread_ts"):
            message["thread_ts"] = body["thread_ts"]
        return Reply(200, {"ok": True, "channel": channel, "ts": ts, "message": message})

    def _slack_webhook(self, request: Request) -> Reply:
        # Incoming webhooks answer plain text.
        if request.path != f"{SLACK_WEBHOOK_PATH}{self.slack_webhook}":
            return Reply(404, "no_service", {"Content-Type": "text/html"})
        try:
            body = request.json()
        except ValueError:
            return Reply(400, "invalid_payload", {"Content-Type": "text/html"})
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return Reply(400, "no_text", {"Content-Type": "text/html"})
        return Reply(200, "ok", {"Content-Type": "text/html"})

    def _teams(self, request: Request) -> Reply:
        if request.path != f"{TEAMS_WEBHOOK_PATH}{self.teams_webhook}":
            return Reply(
                404,
                {
                    "error": {
                        "code": "WorkflowTriggerNotFound",
                        "message": "The workflow was not found.",
                    }
                },
            )
        try:
            body = request.json()
            card = body["attachments"][0]
            ok = (
                body["type"] == "message"
                and card["contentType"] == "application/vnd.microsoft.card.adaptive"
                and card["content"]["type"] == "AdaptiveCard"
                and card["content"]["body"]
            )
        except (ValueError, KeyError, IndexError, TypeError):
            ok = False
        if not ok:
            return Reply(
                400,
                {
                    "error": {
                        "code": "InvalidRequestContent",
                        "message": "The request content is not a valid Adaptive Card message.",
                    }
                },
            )
        return Reply(202, b"")


def _pagerduty(request: Request) -> Reply:
    """Events API v2: 202 with the dedup key, or 400 `invalid event` with its errors."""
    try:
        event = request.json()
    except ValueError:
        return Reply(
            400,
            {
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": ["Invalid JSON"],
            },
        )
    errors = []
    if len(str(event.get("routing_key", ""))) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in {"trigger", "acknowledge", "resolve"}:
        errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
    if action == "trigger":
        payload = event.get("payload") or {}
        for name in ("summary", "source", "severity"):
            if not payload.get(name):
                errors.append(f"'payload.{name}' is missing or blank")
        if payload.get("severity") not in {None, "critical", "error", "warning", "info"}:
            errors.append(
                "'payload.severity' is invalid (must be one of critical, error, warning, info)"
            )
    elif not event.get("dedup_key"):
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if errors:
        return Reply(
            400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        )
    key = event.get("dedup_key") or f"pd-{time.time_ns()}"
    return Reply(202, {"status": "success", "message": "Event processed", "dedup_key": key})


@contextmanager
def providers(**secrets: str) -> Iterator[Providers]:
    """Start the stand-ins; `secrets` sets slack_token, slack_webhook and teams_webhook."""
    state = Providers(**secrets)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request(self.command, self.path, dict(self.headers), body)
            with lock:
                state.requests.append(request)
                queue = state.script.get(self.path)
                reply = queue.pop(0) if queue else None
                delay = state.delays.get(self.path.split("/")[1], 0.0)
            reply = reply or state.default(request)
            if reply.delay or delay:
                time.sleep(reply.delay or delay)
            if reply.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if isinstance(reply.body, bytes | str):
                data = reply.body.encode() if isinstance(reply.body, str) else reply.body
                content_type = "text/plain; charset=utf-8"
            else:
                data = json.dumps(reply.body if reply.body is not None else {}).encode()
                content_type = "application/json; charset=utf-8"
            self.send_response(reply.status)
            headers = {
                "Content-Type": content_type,
                **reply.headers,
                "Content-Length": str(len(data)),
            }
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# --- SMTP -------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What the SMTP stand-in received."""

    host: str = "127.0.0.1"
    port: int = 0
    ca_file: str = ""
    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    """(MAIL FROM, RCPT TOs, the message) for each accepted message."""
    logins: list[str] = field(default_factory=list)
    delay: float = 0.0


def self_signed(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for `name` and 127.0.0.1, made with `cryptography`: (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def smtp_server(
    folder: Path, username: str, password: str, *, delay: float = 0.0
) -> Iterator[Mailbox]:
    """aiosmtpd on loopback requiring STARTTLS and then AUTH (PLAIN or LOGIN) as `username`."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    logging.getLogger("mail.log").setLevel(
        logging.ERROR
    )  # aiosmtpd warns about its own deprecated attribute
    cert, key = self_signed(folder)
    box = Mailbox(port=_free_port(), ca_file=str(cert), delay=delay)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == username
            and data.password.decode() == password
        )
        if ok:
            box.logins.append(username)
        return AuthResult(success=ok, handled=False)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if box.delay:
                await asyncio.sleep(box.delay)
            message = message_from_bytes(
                envelope.original_content or envelope.content, policy=policy.default
            )
            box.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
            return "250 Message accepted for delivery"

    controller = Controller(
        Handler(),
        hostname=box.host,
        port=box.port,
        tls_context=tls,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticator,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()
