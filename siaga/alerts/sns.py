"""The I/O half of SNS (CloudWatch alarms): fetching signing certificates, confirming subscriptions,
recording them. `signatures.verify` decides what is authentic and which URLs may be visited; this
module only visits URLs it has already allowed (`check_sns_url`).

SNS's HTTP(S) subscription handshake: SNS posts a signed ``SubscriptionConfirmation``; the endpoint
proves it wants the messages by visiting its ``SubscribeURL``; SNS then posts ``Notification``\\ s,
and an ``UnsubscribeConfirmation`` once the subscription is deleted (not to be visited: that would
subscribe again).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

import httpx
from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError

from siaga.store import sns_subscriptions

__all__ = ["MAX_CERTIFICATE", "CertificateCache", "confirm_subscription", "record_subscription"]

MAX_CERTIFICATE = 64 * 1024
"""A PEM certificate is a few KiB; anything bigger is not one."""


class CertificateCache:
    """Fetches SNS signing certificates (from URLs `verify` allowed) once and keeps them: SNS signs
    with the same certificate for months, and a receiver must not fetch it per message."""

    def __init__(self, client: httpx.Client, max_entries: int = 32) -> None:
        self.client = client
        self.fetches = 0
        self._pems: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def __call__(self, url: str) -> bytes:
        with self._lock:
            if url in self._pems:
                self._pems.move_to_end(url)
                return self._pems[url]
        response = self.client.get(url)
        response.raise_for_status()
        if len(response.content) > MAX_CERTIFICATE:
            raise ValueError(f"{url} is over {MAX_CERTIFICATE} bytes: not a certificate")
        with self._lock:
            self.fetches += 1
            self._pems[url] = response.content
            while len(self._pems) > self._max:
                self._pems.popitem(last=False)
        return response.content


def confirm_subscription(client: httpx.Client, subscribe_url: str) -> None:
    """Visit the (already allowed) SubscribeURL; raises `httpx.HTTPError` if SNS did not say yes."""
    client.get(subscribe_url).raise_for_status()


def record_subscription(engine: Engine, topic_arn: str, state: str, message_id: str, now: datetime) -> None:
    """Note that the receiver is now `state` (confirmed | unsubscribed) for `topic_arn`."""
    values = {"state": state, "message_id": message_id, "updated_at": now}
    where = sns_subscriptions.c.topic_arn == topic_arn
    for _ in range(2):
        with engine.begin() as connection:
            if connection.execute(update(sns_subscriptions).where(where).values(**values)).rowcount:
                return
        try:
            with engine.begin() as connection:
                connection.execute(insert(sns_subscriptions).values(topic_arn=topic_arn, **values))
            return
        except IntegrityError:
            continue  # another receiver inserted it first: update it
