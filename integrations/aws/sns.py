"""SNS: publish a message to a topic (pagers, e-mail lists, chat bridges subscribed to it).

A FIFO topic (its name ends in ``.fifo``) gets a MessageDeduplicationId derived from the step's
idempotency key, so SNS drops a repeat of the same step's message within its five-minute window,
and a MessageGroupId of the incident (or run). A standard topic cannot deduplicate: a publish
whose outcome is unknown is left to a person (`siaga ledger`), never sent blindly twice.

In a drill the subject and message carry ``[DRILL]``; a `production: true` connection is never
published to in a drill: its `sandbox` connection is, or, without one, the call is recorded.
"""

from __future__ import annotations

import re

import boto3
from pydantic import BaseModel, ConfigDict, Field

from siaga.actions import ActionContext

from ._client import Aws, AwsParams, SessionFactory, deduplication_id


class SnsPublish(AwsParams):
    """Publish a message to an SNS topic."""

    topic_arn: str = Field(pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w.-]+$", description="The topic's ARN.")
    message: str = Field(min_length=1, max_length=250_000, description="The text of the message.")
    subject: str = Field(
        default="", max_length=92, pattern=r"^[\x20-\x7e]*$",
        description="A subject for e-mail subscribers: printable ASCII, at most 92 characters (100 with [DRILL]).",
    )
    message_group_id: str | None = Field(default=None, description="FIFO topics: the group; default the incident or run.")


class PublishResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic_arn: str
    published: bool
    message_id: str | None = None
    sequence_number: str | None = None
    fifo: bool = False
    deduplication_id: str | None = None
    note: str = ""


async def publish(
    params: SnsPublish, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> PublishResult:
    fifo = params.topic_arn.endswith(".fifo")
    aws = await Aws.connect(params, context, ["sns"], session_factory)
    request: dict[str, str] = {"TopicArn": params.topic_arn, "Message": params.message}
    if params.subject:
        request["Subject"] = params.subject
    dedup = None
    if fifo:
        dedup = deduplication_id(context.idempotency_key)
        group = params.message_group_id or re.sub(r"[^\w!-~]", "-", context.incident_id or context.run_id)[:128]
        request |= {"MessageDeduplicationId": dedup, "MessageGroupId": group}
    # Only a FIFO topic deduplicates: only there may a publish of unknown outcome be sent again.
    answer = await aws.call("sns", "publish", idempotent=fifo, **request)
    return PublishResult(
        topic_arn=params.topic_arn, published=True, message_id=answer.get("MessageId"),
        sequence_number=answer.get("SequenceNumber"), fifo=fifo, deduplication_id=dedup,
    )
