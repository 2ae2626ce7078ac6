"""`whatsapp.send`: a WhatsApp message from a business number, through the WhatsApp Cloud API.

In ``connections.yaml``::

    connections:
      wa:
        type: whatsapp
        phone_number_id: "106540352242922"            # the business number's id, not the number
        access_token: secret://whatsapp-token         # a system-user token (whatsapp_business_messaging)
        production: true
        sandbox: wa-test                              # Meta's test number, for drills

``POST /{phone-number-id}/messages`` with ``{"messaging_product": "whatsapp", "to", "type", ...}``
sends either

* a **session message** (``type: text``): free text, allowed only within 24 hours of the person's
  last message to the number (error 131047 past it); `reply_to` quotes the message it answers;
* a **template message** (``type: template``): a template Meta approved, by `name` and `language`,
  its body's ``{{1}}``, ``{{2}}``... filled from `parameters`: the only way to write first.

Cloud API answers ``{"messaging_product", "contacts": [{"input", "wa_id"}], "messages": [{"id":
"wamid...", "message_status"}]}``. Errors are Graph's (`_graph`), with WhatsApp's own codes:
130429 (throughput) and 131056 (too many to one person) are rate limits, waited out; 131047 (the
24-hour window has closed) and 131026 (undeliverable) are refusals saying what to do instead.
Delivery is reported later, by webhook; the step's key goes with the message as
``biz_opaque_callback_data`` so those reports name it.

The Cloud API takes no idempotency key and cannot list what was sent: each message is a side-effect
ledger entry, and when an attempt ended without an answer a person settles it (`siaga ledger`).
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from siaga.actions import (
    ActionContext,
    ActionFailed,
    ActionParams,
    ActionSpec,
    CannotReconcile,
    DrillBehaviour,
    Risk,
)

from ._graph import Graph, GraphConnection
from ._http import http_client
from ._social import Posted, account, to_outbox_instead

__all__ = ["ACTIONS", "Template", "WhatsAppConnection", "WhatsAppSend", "send"]

WINDOW_CLOSED = 131047
UNDELIVERABLE = 131026
_PHONE = r"^\+?[1-9][0-9]{6,14}$"


class WhatsAppConnection(GraphConnection):
    """A WhatsApp Business phone number on the Cloud API."""

    type: Literal["whatsapp"] = "whatsapp"
    phone_number_id: str = Field(pattern=r"^[0-9]+$", description="The business phone number's id.")


class Template(BaseModel):
    """A message template Meta approved, and the values of its body's placeholders."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    name: str = Field(pattern=r"^[a-z0-9_]+$", description="The template's name.")
    language: str = Field(
        default="id", pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$", description="Its language code: id, en, en_US..."
    )
    parameters: list[str] = Field(
        default_factory=list, description="The values of {{1}}, {{2}}... of its body, in order."
    )


class WhatsAppSend(ActionParams):
    """Send a WhatsApp message: free `text` within 24 hours of the person's last message, else a
    `template` (or to the outbox when no WhatsApp number is configured)."""

    to: str = Field(pattern=_PHONE, description="The phone number in international form: +6281234567890.")
    text: str | None = Field(
        default=None, min_length=1, max_length=4096, description="A session message's text."
    )
    template: Template | None = Field(default=None, description="A template message instead of text.")
    reply_to: str | None = Field(
        default=None, description="The wamid of the person's message this answers (quoted above it)."
    )
    preview_url: bool = Field(default=False, description="Show a preview of the first link in the text.")
    connection: str | None = Field(default=None, description="The `type: whatsapp` connection to send from.")

    @model_validator(mode="after")
    def _text_or_template(self) -> WhatsAppSend:
        if (self.text is None) == (self.template is None):
            raise ValueError("give either text (a session message) or template")
        return self


async def send(
    params: WhatsAppSend, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> Posted:
    number = account(context, WhatsAppConnection, params.connection)
    to = f"whatsapp:{params.to}"
    if number is None:
        text = params.text or _template_text(params.template)
        return await to_outbox_instead(context, "WhatsApp", to, text)
    message: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": params.to.lstrip("+"),
        "biz_opaque_callback_data": context.idempotency_key,
    }
    if params.text is not None:
        message |= {"type": "text", "text": {"body": params.text, "preview_url": params.preview_url}}
    else:
        message |= {"type": "template", "template": _template(params.template)}
    if params.reply_to:
        message["context"] = {"message_id": params.reply_to}
    async with http_client(client, number.timeout) as http:
        try:
            answer = await Graph(number, context, http, "WhatsApp").call(
                "POST", f"{number.phone_number_id}/messages", body=message
            )
        except ActionFailed as exc:
            raise _explained(exc, params) from None
    sent = (answer.get("messages") or [{}])[0]
    wamid = sent.get("id") if isinstance(sent, dict) else None
    return Posted(delivered_via="whatsapp", to=to, id=str(wamid) if wamid else None)


async def reconcile(params: WhatsAppSend, context: ActionContext) -> Posted | None:
    raise CannotReconcile("the WhatsApp Cloud API cannot list the messages a number sent")


def _template(template: Template | None) -> dict[str, Any]:
    assert template is not None
    found: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
    if template.parameters:
        found["components"] = [
            {"type": "body", "parameters": [{"type": "text", "text": p} for p in template.parameters]}
        ]
    return found


def _template_text(template: Template | None) -> str:
    assert template is not None
    values = ", ".join(template.parameters)
    return f"(template {template.name}, {template.language}){': ' + values if values else ''}"


def _explained(error: ActionFailed, params: WhatsAppSend) -> ActionFailed:
    """The todo WhatsApp's own refusals call for."""
    text = str(error)
    if f"(#{WINDOW_CLOSED})" in text:
        error.todo = (
            f"more than 24 hours have passed since {params.to} last wrote to this number: send an "
            "approved template (`template: {name: ..., language: id}`) instead of text"
        )
    elif f"(#{UNDELIVERABLE})" in text:
        error.todo = f"{params.to} cannot receive WhatsApp messages: reach them another way"
    return error


ACTIONS = (
    ActionSpec(
        name="whatsapp.send",
        params=WhatsAppSend,
        run=send,
        risk=Risk.NOTIFY,
        drill=DrillBehaviour.RECORD,
        summary="Send a WhatsApp message (session text or approved template) through the Cloud API.",
        message_fields=("text",),
        reconcile=reconcile,
    ),
)
