"""Pure parsers: one per alert source, each turning a webhook payload into `Alert`s.

Public surface (stable; the receiver app builds on it)::

    parse(source: str, payload: Mapping) -> list[Alert]
    parse_body(source: str, body: bytes) -> list[Alert]      # JSON-decodes, then `parse`
    sns_subscribe_url(payload: Mapping) -> str | None        # URL confirming an SNS subscription
    SOURCES: frozenset[str]                                  # the built-in source names
    generic_fingerprint(labels: Mapping[str, str]) -> str

`source` is one of ``alertmanager``, ``grafana``, ``cloudwatch`` (CloudWatch alarms delivered by
SNS), ``pagerduty``, or else the name of a generic source (``/hooks/generic/{source}``, e.g.
``social``), whose alerts carry that name as `Alert.source` so runbook triggers can match it.

Every parser takes the parsed JSON (a `Mapping`) and returns values: no network, no clock. Anything
malformed raises `BadPayload` (HTTP 400/422) with a message naming the field, such as
``alerts[0].labels.severity: expected a string, got int``; no other exception type escapes.
A payload that is well formed but carries no alert (an SNS subscription confirmation, a PagerDuty
event about something other than an incident) yields an empty list.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from siaga.incidents.alert import Alert, AlertStatus

from .body import BadPayload, NotJson, decode

__all__ = [
    "SOURCES",
    "BadPayload",
    "generic_fingerprint",
    "parse",
    "parse_body",
    "sns_subscribe_url",
]

_GENERIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


# --- field helpers: each names the path of what it reads -------------------------------------


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadPayload(f"{path}: expected an object, got {_type_name(value)}")
    return value


def _field(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise BadPayload(f"{_join(path, key)}: missing")
    return obj[key]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _str(value: object, path: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise BadPayload(f"{path}: expected a string, got {_type_name(value)}")
    if not empty and not value.strip():
        raise BadPayload(f"{path}: must not be empty")
    return value


def _opt_str(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    return None if value is None else _str(value, _join(path, key), empty=True)


def _str_map(value: object, path: str, *, scalars: bool = False) -> dict[str, str]:
    """A label or annotation set. With `scalars`, numbers and booleans are taken as text."""
    if value is None:
        return {}
    obj = _mapping(value, path)
    out: dict[str, str] = {}
    for key, item in obj.items():
        if not isinstance(key, str):
            raise BadPayload(f"{path}: keys must be strings, got {_type_name(key)}")
        if isinstance(item, str):
            out[key] = item
        elif scalars and isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif scalars and isinstance(item, int | float):
            out[key] = json.dumps(item)
        else:
            kind = "a string, number or boolean" if scalars else "a string"
            raise BadPayload(f"{path}.{key}: expected {kind}, got {_type_name(item)}")
    return out


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise BadPayload(f"{path}: expected a list, got {_type_name(value)}")
    return list(value)


_ISO = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:?\d{2})$"
)
_ZERO_TIME = "0001-01-01T00:00:00"


def _time(value: object, path: str) -> datetime:
    """An RFC 3339 timestamp with an offset (Go's nanoseconds are cut to microseconds)."""
    text = _str(value, path)
    match = _ISO.match(text.strip())
    if match is None:
        raise BadPayload(f"{path}: expected an RFC 3339 timestamp with a time zone, got {text!r}")
    date, clock, fraction, offset = match.groups()
    micros = (fraction or "0")[:6].ljust(6, "0")
    offset = "+00:00" if offset in ("Z", "z") else f"{offset[:3]}:{offset[-2:]}"
    try:
        parsed = datetime.fromisoformat(f"{date}T{clock}.{micros}{offset}")
    except ValueError as exc:
        raise BadPayload(f"{path}: {text!r} is not a valid time ({exc})") from None
    return parsed


def _opt_time(obj: Mapping[str, Any], key: str, path: str) -> datetime | None:
    """A timestamp that may be absent, null, empty or Go's zero time (all meaning "not set")."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.startswith(_ZERO_TIME):
        return None
    return _time(value, _join(path, key))


def _status(value: object, path: str, mapping: Mapping[str, AlertStatus]) -> AlertStatus:
    text = _str(value, path)
    try:
        return mapping[text.lower()]
    except KeyError:
        known = ", ".join(sorted(mapping))
        raise BadPayload(f"{path}: unknown status {text!r} (expected one of {known})") from None


def _alert(**fields: Any) -> Alert:
    try:
        return Alert(**fields)
    except ValidationError as exc:
        raise BadPayload(f"not a valid alert: {exc.errors()[0]['msg']}") from None


_FIRING_RESOLVED = {"firing": AlertStatus.FIRING, "resolved": AlertStatus.RESOLVED}


# --- Alertmanager ----------------------------------------------------------------------------


def _parse_alertmanager(payload: Mapping[str, Any], source: str = "alertmanager") -> list[Alert]:
    """Alertmanager's webhook (version 4).

    `fingerprint` depends on the labels alone, so it stays the same across firing, resolved and
    re-firing; `startsAt` tells one episode from the next. A firing alert carries ``endsAt:
    0001-01-01T00:00:00Z`` (Go's zero time), read as no end. The same firing payload repeats every
    `repeat_interval`, and repeats share `Alert.episode`.
    """
    version = payload.get("version")
    if version is not None and str(version) != "4":
        raise BadPayload(f'version: unsupported webhook version {version!r} (expected "4")')
    alerts = _list(_field(payload, "alerts", ""), "alerts")
    common = {
        "receiver": payload.get("receiver"),
        "groupKey": payload.get("groupKey"),
        "externalURL": payload.get("externalURL"),
    }
    out = []
    for i, item in enumerate(alerts):
        path = f"alerts[{i}]"
        record = _mapping(item, path)
        labels = _str_map(
            _mapping(_field(record, "labels", path), f"{path}.labels"), f"{path}.labels"
        )
        fingerprint = record.get("fingerprint")
        if fingerprint is None:
            fingerprint = generic_fingerprint(labels)
        out.append(
            _alert(
                source=source,
                fingerprint=_str(fingerprint, f"{path}.fingerprint"),
                status=_status(_field(record, "status", path), f"{path}.status", _FIRING_RESOLVED),
                labels=labels,
                annotations=_str_map(record.get("annotations"), f"{path}.annotations"),
                starts_at=_opt_time(record, "startsAt", path),
                ends_at=_opt_time(record, "endsAt", path),
                raw={**{k: v for k, v in common.items() if v is not None}, **dict(record)},
            )
        )
    return out


# --- Grafana ---------------------------------------------------------------------------------


def _parse_grafana(payload: Mapping[str, Any]) -> list[Alert]:
    """Grafana unified alerting's webhook: Alertmanager's shape plus `orgId`, `state`, `title`,
    `message`, and per alert `values`, `silenceURL`, `dashboardURL`, `panelURL`. A Grafana
    fingerprint, like Alertmanager's, is a hash of the labels."""
    alerts = _parse_alertmanager(
        {k: v for k, v in payload.items() if k != "version"}, source="grafana"
    )
    extra = {k: payload[k] for k in ("orgId", "title", "state") if k in payload}
    return [a.model_copy(update={"raw": {**extra, **a.raw}}) for a in alerts]


# --- CloudWatch via SNS ----------------------------------------------------------------------

_ALARM_STATES = {"alarm": AlertStatus.FIRING, "ok": AlertStatus.RESOLVED}


def sns_subscribe_url(payload: Mapping[str, Any]) -> str | None:
    """For an SNS ``SubscriptionConfirmation``, the ``SubscribeURL`` the receiver must GET (after
    `signatures.verify`) to confirm the subscription; None for any other message."""
    envelope = _mapping(payload, "payload")
    if envelope.get("Type") != "SubscriptionConfirmation":
        return None
    url = _str(_field(envelope, "SubscribeURL", ""), "SubscribeURL")
    if not url.startswith("https://"):
        raise BadPayload(f"SubscribeURL: expected an https URL, got {url!r}")
    return url


def _parse_cloudwatch(payload: Mapping[str, Any]) -> list[Alert]:
    """A CloudWatch alarm state change in an SNS envelope.

    Only ``Notification`` messages carry an alarm; subscription (un)confirmations yield nothing
    (see `sns_subscribe_url`). The fingerprint is a hash of account, region and alarm name; ALARM
    is firing, OK is resolved, and INSUFFICIENT_DATA (neither) yields nothing.
    """
    kind = _str(_field(payload, "Type", ""), "Type")
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        return []
    if kind != "Notification":
        raise BadPayload(f"Type: unknown SNS message type {kind!r}")
    message = _str(_field(payload, "Message", ""), "Message")
    try:
        alarm = decode(message, "Message")
    except NotJson:
        raise BadPayload(
            "Message: not JSON (is this SNS topic carrying CloudWatch alarms?)"
        ) from None
    alarm = _mapping(alarm, "Message")
    name = _str(_field(alarm, "AlarmName", "Message"), "Message.AlarmName")
    state = _str(_field(alarm, "NewStateValue", "Message"), "Message.NewStateValue")
    if state.upper() == "INSUFFICIENT_DATA":
        return []
    status = _status(state, "Message.NewStateValue", _ALARM_STATES)
    account = _str(_field(alarm, "AWSAccountId", "Message"), "Message.AWSAccountId")
    region = _region(alarm, payload)
    changed = _opt_time(alarm, "StateChangeTime", "Message")
    labels = {"alertname": name, "account": account, "region": region}
    trigger = alarm.get("Trigger")
    if trigger is not None:
        trigger = _mapping(trigger, "Message.Trigger")
        for key, label in (("MetricName", "metric"), ("Namespace", "namespace")):
            value = _opt_str(trigger, key, "Message.Trigger")
            if value:
                labels[label] = value
        dimensions = trigger.get("Dimensions")
        if dimensions is not None:
            for i, dim in enumerate(_list(dimensions, "Message.Trigger.Dimensions")):
                path = f"Message.Trigger.Dimensions[{i}]"
                dim = _mapping(dim, path)
                # CloudWatch spells these `name`/`value`; some tools send `Name`/`Value`.
                key = dim.get("name", dim.get("Name"))
                value = dim.get("value", dim.get("Value"))
                labels[_str(key, f"{path}.name")] = _str(value, f"{path}.value", empty=True)
    annotations = {}
    for key, annotation in (("AlarmDescription", "description"), ("NewStateReason", "summary")):
        value = _opt_str(alarm, key, "Message")
        if value:
            annotations[annotation] = value
    subject = _opt_str(payload, "Subject", "")
    if subject:
        annotations["title"] = subject
    identity = f"{account}\x1f{region}\x1f{name}"
    return [
        _alert(
            source="cloudwatch",
            fingerprint=hashlib.sha256(identity.encode()).hexdigest()[:32],
            status=status,
            labels=labels,
            annotations=annotations,
            # CloudWatch says when the state changed; an alarm episode starts at its ALARM change.
            starts_at=changed if status is AlertStatus.FIRING else None,
            ends_at=changed if status is AlertStatus.RESOLVED else None,
            raw={
                "MessageId": payload.get("MessageId"),
                "TopicArn": payload.get("TopicArn"),
                "Timestamp": payload.get("Timestamp"),
                "alarm": dict(alarm),
            },
        )
    ]


def _region(alarm: Mapping[str, Any], envelope: Mapping[str, Any]) -> str:
    """The region code from the alarm ARN (``arn:aws:cloudwatch:<region>:...``), else `Region`."""
    arn = alarm.get("AlarmArn")
    if isinstance(arn, str) and arn.count(":") >= 4 and arn.split(":")[3]:
        return arn.split(":")[3]
    topic = envelope.get("TopicArn")
    if isinstance(topic, str) and topic.count(":") >= 4 and topic.split(":")[3]:
        return topic.split(":")[3]
    return _str(_field(alarm, "Region", "Message"), "Message.Region")


# --- PagerDuty -------------------------------------------------------------------------------

_PD_STATUS = {
    "incident.triggered": AlertStatus.FIRING,
    "incident.reopened": AlertStatus.FIRING,
    "incident.resolved": AlertStatus.RESOLVED,
}


def _parse_pagerduty(payload: Mapping[str, Any]) -> list[Alert]:
    """A PagerDuty webhook (v3): one event per delivery.

    ``incident.triggered`` and ``incident.reopened`` are firing, ``incident.resolved`` is resolved;
    `starts_at` is the incident's `created_at`, except for a reopened incident, whose new episode
    starts when it was reopened (`occurred_at`), so it is not taken for a repeat of the first one;
    every other event (acknowledged, annotated, escalated, ..., service.*, pagey.ping) yields
    nothing: it neither opens nor closes an episode. The fingerprint is the incident id.
    """
    event = _mapping(_field(payload, "event", ""), "event")
    event_type = _str(_field(event, "event_type", "event"), "event.event_type")
    data = _mapping(_field(event, "data", "event"), "event.data")
    if event_type not in _PD_STATUS:
        # Acknowledged, escalated, annotated, service.*, pagey.ping and types PagerDuty adds
        # later: accepted and ignored (refusing them would make PagerDuty disable the webhook).
        return []
    kind = _opt_str(data, "type", "event.data")
    if kind not in (None, "incident"):
        raise BadPayload(f"event.data.type: expected 'incident' for {event_type}, got {kind!r}")
    incident_id = _str(_field(data, "id", "event.data"), "event.data.id")
    occurred = _time(_field(event, "occurred_at", "event"), "event.occurred_at")
    created = _opt_time(data, "created_at", "event.data") or occurred
    labels = {"incident_id": incident_id}
    for key in ("urgency", "status", "number", "incident_key"):
        value = data.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            labels[key] = str(value)
    for key, label in (("service", "service"), ("priority", "priority")):
        ref = data.get(key)
        if ref is None:
            continue
        ref = _mapping(ref, f"event.data.{key}")
        name = ref.get("summary", ref.get("name", ref.get("id")))
        if name is not None:
            labels[label] = _str(name, f"event.data.{key}.summary", empty=True)
    annotations = {}
    title = _opt_str(data, "title", "event.data")
    if title:
        annotations["summary"] = title
    url = _opt_str(data, "html_url", "event.data")
    if url:
        annotations["url"] = url
    status = _PD_STATUS[event_type]
    return [
        _alert(
            source="pagerduty",
            fingerprint=incident_id,
            status=status,
            labels=labels,
            annotations=annotations,
            starts_at=occurred if event_type == "incident.reopened" else created,
            ends_at=occurred if status is AlertStatus.RESOLVED else None,
            raw={"event_id": event.get("id"), "event_type": event_type, "data": dict(data)},
        )
    ]


# --- Generic ---------------------------------------------------------------------------------


def generic_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable fingerprint of a label set: the same labels in any order give the same value."""
    canonical = json.dumps(sorted(labels.items()), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _parse_generic(payload: Mapping[str, Any], source: str) -> list[Alert]:
    """A generic signed webhook: ``{"alerts": [...]}`` or one alert object.

    Each alert has `labels` (strings, numbers or booleans, taken as text) and optionally
    `fingerprint` (default: `generic_fingerprint(labels)`), `status` (firing | resolved, default
    firing), `annotations`, `starts_at` and `ends_at` (RFC 3339 with a time zone).
    """
    if "alerts" in payload:
        items = _list(payload["alerts"], "alerts")
        paths = [f"alerts[{i}]" for i in range(len(items))]
    else:
        items, paths = [payload], [""]
    out = []
    for item, path in zip(items, paths, strict=True):
        record = _mapping(item, path or "payload")
        where = _join(path, "labels")
        labels = _str_map(_mapping(_field(record, "labels", path), where), where, scalars=True)
        fingerprint = record.get("fingerprint")
        fingerprint = (
            generic_fingerprint(labels)
            if fingerprint is None
            else _str(fingerprint, _join(path, "fingerprint"))
        )
        status = record.get("status")
        out.append(
            _alert(
                source=source,
                fingerprint=fingerprint,
                status=AlertStatus.FIRING
                if status is None
                else _status(status, _join(path, "status"), _FIRING_RESOLVED),
                labels=labels,
                annotations=_str_map(
                    record.get("annotations"), _join(path, "annotations"), scalars=True
                ),
                starts_at=_opt_time(record, "starts_at", path),
                ends_at=_opt_time(record, "ends_at", path),
                raw=dict(record),
            )
        )
    return out


# --- dispatch --------------------------------------------------------------------------------

_PARSERS: dict[str, Callable[[Mapping[str, Any]], list[Alert]]] = {
    "alertmanager": _parse_alertmanager,
    "grafana": _parse_grafana,
    "cloudwatch": _parse_cloudwatch,
    "pagerduty": _parse_pagerduty,
}

SOURCES: frozenset[str] = frozenset(_PARSERS)
"""The built-in sources; any other (valid) name is a generic source."""


def parse(source: str, payload: Mapping[str, Any]) -> list[Alert]:
    """The alerts in `payload` as `source` sends them. Raises `BadPayload` (only) on anything
    malformed, including an invalid generic source name."""
    if not isinstance(payload, Mapping):
        raise BadPayload(f"payload: expected a JSON object, got {_type_name(payload)}")
    parser = _PARSERS.get(source)
    if parser is not None:
        return parser(payload)
    if not isinstance(source, str) or not _GENERIC_NAME.match(source):
        raise BadPayload(
            f"source {source!r}: not a built-in source ({', '.join(sorted(SOURCES))}) nor a "
            "valid generic source name (lowercase letters, digits, '-' and '_')"
        )
    return _parse_generic(payload, source)


def parse_body(source: str, body: bytes | str) -> list[Alert]:
    """`parse` of a raw request body: it must be a UTF-8 JSON object that every store keeps
    (`siaga.alerts.body.decode`)."""
    return parse(source, decode(body))
