"""`email.send`: mail through an SMTP server, with STARTTLS and AUTH.

A ``type: smtp`` connection::

    mail: {type: smtp, host: smtp.example.com, port: 587, username: siaga,
           password: secret://smtp-password, sender: "Siaga <siaga@example.com>"}

Each message has a plain text part and an HTML part (made from the text when none is given) and
a ``Message-ID`` derived from the step's idempotency key, so a copy sent twice by accident is one
message to mail clients that thread and deduplicate by it. smtplib is synchronous: the exchange
runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import html as html_lib
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formataddr, getaddresses, parseaddr
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from siaga.actions import ActionContext, ActionFailed, ActionParams, ActionSpec, Connection, Risk

from ._notify import Delivery, configured, to_outbox

__all__ = [
    "ACTIONS",
    "EmailSend",
    "EmailSent",
    "SmtpConnection",
    "build_message",
    "message_id",
    "send",
]

SmtpFactory = Callable[..., smtplib.SMTP]
"""Opens an SMTP session: ``(host, port, timeout=...)`` like `smtplib.SMTP`."""


class SmtpConnection(Connection):
    """An SMTP server that relays Siaga's mail."""

    type: Literal["smtp"] = "smtp"
    host: str = Field(description="The SMTP server.")
    port: int = Field(default=587, ge=1, le=65535)
    sender: str = Field(description='The From address, e.g. "Siaga <siaga@example.com>".')
    username: str | None = Field(default=None, description="AUTH user name (no AUTH when absent).")
    password: str | None = Field(
        default=None, pattern=r"^secret://", description="secret://NAME of the AUTH password."
    )
    starttls: bool = Field(
        default=True, description="Upgrade the session with STARTTLS before AUTH."
    )
    ca_file: str | None = Field(
        default=None, description="CA certificates to verify the server with (PEM)."
    )
    verify: bool = Field(default=True, description="Verify the server's certificate and name.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for the server.")

    @field_validator("sender")
    @classmethod
    def _address(cls, value: str) -> str:
        return _checked_address(value)

    @model_validator(mode="after")
    def _auth(self) -> SmtpConnection:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        return self


def _checked_address(value: str) -> str:
    _, address = parseaddr(value)
    if "@" not in address or " " in address:
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


def _addresses(value: Any) -> Any:
    """One address, a comma-separated string of them, or a list."""
    if isinstance(value, str):
        return [formataddr(pair) if pair[0] else pair[1] for pair in getaddresses([value])]
    return value


class EmailSend(ActionParams):
    """Send an e-mail (or record it in the outbox when no SMTP connection is configured)."""

    to: list[str] = Field(
        min_length=1, description="Recipients: a list, or one comma-separated string."
    )
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(
        default_factory=list, description="Hidden recipients (not in the headers)."
    )
    subject: str = Field(min_length=1, description="The subject line.")
    text: str = Field(min_length=1, description="The plain text body.")
    html: str | None = Field(default=None, description="An HTML body (default: the text, escaped).")
    reply_to: str | None = None
    connection: str | None = Field(default=None, description="The `type: smtp` connection to use.")

    @field_validator("to", "cc", "bcc", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _addresses(value)

    @field_validator("to", "cc", "bcc")
    @classmethod
    def _check(cls, value: list[str]) -> list[str]:
        return [_checked_address(address) for address in value]


class EmailSent(Delivery):
    """A message the server accepted (or the outbox recorded)."""

    delivered_via: Literal["smtp", "outbox"]
    message_id: str = Field(description="The message's Message-ID header.")
    recipients: list[str] = Field(
        default_factory=list, description="Addresses the server accepted."
    )


def message_id(context: ActionContext, sender: str) -> str:
    """A Message-ID that is the same for every attempt of this step in this incident or run."""
    digest = hashlib.sha256(f"{context.idempotency_key}:email.send".encode()).hexdigest()[:32]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "siaga.invalid"
    return f"<siaga.{digest}@{domain}>"


def build_message(params: EmailSend, sender: str, msgid: str) -> EmailMessage:
    """The message: headers, a text/plain part and a text/html alternative."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(params.to)
    if params.cc:
        message["Cc"] = ", ".join(params.cc)
    if params.reply_to:
        message["Reply-To"] = params.reply_to
    message["Subject"] = params.subject
    message["Message-ID"] = msgid
    message.set_content(params.text)
    html = params.html
    if html is None:
        html = (
            "<html><body><p>"
            + html_lib.escape(params.text).replace("\n\n", "</p><p>").replace("\n", "<br>\n")
            + "</p></body></html>"
        )
    message.add_alternative(html, subtype="html")
    return message


async def send(
    params: EmailSend, context: ActionContext, *, smtp: SmtpFactory = smtplib.SMTP
) -> EmailSent:
    connection = configured(context, SmtpConnection, params.connection)
    recipients = [parseaddr(a)[1] for a in (*params.to, *params.cc, *params.bcc)]
    to = "email:" + ", ".join(recipients)
    if connection is None:
        via, entry = await to_outbox(
            context, provider="SMTP", to=to, subject=params.subject, message=params.text
        )
        return EmailSent(
            delivered_via=via,
            to=to,
            outbox_id=entry,
            message_id=message_id(context, "siaga@localhost"),
        )
    password = context.secret(connection.password) if connection.password else None
    msgid = message_id(context, connection.sender)
    message = build_message(params, connection.sender, msgid)
    await asyncio.to_thread(_deliver, connection, password, message, recipients, smtp)
    return EmailSent(delivered_via="smtp", to=to, message_id=msgid, recipients=recipients)


@lru_cache(maxsize=16)
def _tls(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    """The STARTTLS context, built once per CA file (building one takes ~30 ms)."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _deliver(
    connection: SmtpConnection,
    password: str | None,
    message: EmailMessage,
    recipients: list[str],
    smtp: SmtpFactory,
) -> None:
    """The SMTP exchange; raises ActionFailed saying at which stage it failed."""
    server = f"SMTP server {connection.host}:{connection.port}"
    stage = "connect"
    try:
        with smtp(connection.host, connection.port, timeout=connection.timeout) as session:
            session.ehlo()
            if connection.starttls:
                stage = "starttls"
                session.starttls(context=_tls(connection.ca_file, connection.verify))
                session.ehlo()
            if connection.username is not None:
                stage = "auth"
                session.login(connection.username, password or "")
            stage = "send"
            refused = session.send_message(message, to_addrs=recipients)
    except smtplib.SMTPAuthenticationError as exc:
        raise ActionFailed(
            f"{server} refused AUTH for {connection.username}: {exc.smtp_code} {_said(exc.smtp_error)}",
            changed=False,
            todo=f"check the user name and the password in {connection.password}",
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise ActionFailed(
            f"{server} does not support {stage.upper()}: {exc}",
            changed=False,
            todo="turn starttls off for this server, or use a server that offers it",
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        refusals = "; ".join(
            f"{addr}: {code} {_said(text)}" for addr, (code, text) in exc.recipients.items()
        )
        raise ActionFailed(
            f"{server} refused every recipient: {refusals}",
            changed=False,
            todo="fix the addresses and run the step again",
        ) from None
    except smtplib.SMTPResponseException as exc:
        transient = 400 <= exc.smtp_code < 500
        raise ActionFailed(
            f"{server} answered {exc.smtp_code} {_said(exc.smtp_error)} during {stage}",
            retryable=transient,
            changed=False,
            todo=None
            if transient
            else "read the server's answer, fix the message or connection, and run the step again",
        ) from None
    except ssl.SSLError as exc:
        raise ActionFailed(
            f"{server}: TLS failed during {stage}: {exc.reason or exc}",
            changed=False,
            todo="check the server's certificate (or the connection's ca_file)",
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        # Before the message was handed over nothing was sent; during it, it may have been.
        raise ActionFailed(
            f"{server}: {type(exc).__name__} during {stage}: {exc}",
            retryable=True,
            changed=None if stage == "send" else False,
        ) from None
    if refused:
        refusals = "; ".join(
            f"{addr}: {code} {_said(text)}" for addr, (code, text) in refused.items()
        )
        raise ActionFailed(
            f"{server} sent the message but refused some recipients: {refusals}",
            changed=True,
            todo="send it to the refused addresses in a step of its own",
        )


def _said(text: bytes | str) -> str:
    return (text.decode(errors="replace") if isinstance(text, bytes) else str(text))[:300]


ACTIONS = (
    ActionSpec(
        name="email.send",
        params=EmailSend,
        run=send,
        risk=Risk.NOTIFY,
        summary="Send an e-mail (text and HTML) over SMTP with STARTTLS and AUTH; to the outbox when SMTP is not configured.",
        message_fields=("subject", "text", "html"),
    ),
)
