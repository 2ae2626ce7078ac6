"""Route 53: move a DNS name to its standby, and put it back.

`aws.route53.failover` works in one of two ways:

* **a failover pair** (no `values` or `alias` given): the name has a PRIMARY and a SECONDARY
  failover record. Route 53 has no "fail over now" call, and its health checks decide which one
  answers. Siaga points the PRIMARY record at the SECONDARY's target (UPSERT), so the standby
  answers whatever the health checks say; the PRIMARY keeps its health check and set identifier.
  (Inverting the primary's health check would also work, but moves every record that uses it.)
* **a standby target** (`values` or `alias` given): the existing record (with `set_identifier`,
  one record of a routing policy) is UPSERTed to point at the standby; its routing policy stays.

Either way the result holds the record set as it was (`previous`), and the undo partner
`aws.route53.restore` puts exactly that back::

    undo: {action: aws.route53.restore, with: {zone: example.com, previous: "{{ step.output.previous }}"}}

Before changing anything the action publishes the record set it is about to replace as a note of
the run, so the old value survives even a crash between the change and the step's record.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import boto3
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from siaga.actions import ActionContext, ActionFailed, ActionParams
from siaga.runbook.durations import Duration

from ._client import Aws, AwsParams, SessionFactory, poll

_TARGET_FIELDS = ("ResourceRecords", "TTL", "AliasTarget")


class Alias(ActionParams):
    """An alias target (a load balancer, CloudFront, another record of the zone)."""

    dns_name: str = Field(min_length=1)
    hosted_zone_id: str = Field(min_length=1, description="The target's hosted zone id (the ELB's canonical zone).")
    evaluate_target_health: bool = False


class Route53Failover(AwsParams):
    """Move a DNS name to its standby: flip a PRIMARY/SECONDARY pair, or point a record elsewhere."""

    zone: str = Field(min_length=1, description="The hosted zone: its id, or its domain name.")
    name: str = Field(min_length=1, description="The record's name, e.g. api.example.com.")
    type: str = Field(default="A", pattern=r"^[A-Z]+$", description="The record type: A, AAAA, CNAME...")
    values: list[str] | None = Field(default=None, min_length=1, description="Standby values (instead of the SECONDARY's).")
    alias: Alias | None = Field(default=None, description="Standby alias target (instead of the SECONDARY's).")
    ttl: int = Field(default=60, ge=0, description="TTL for `values`.")
    set_identifier: str | None = Field(default=None, description="With `values`/`alias`: which record of a routing policy.")
    wait: Duration = Field(default=timedelta(minutes=5), description="How long to wait for the change to be INSYNC.")

    @model_validator(mode="after")
    def _one_target(self) -> Route53Failover:
        if self.values is not None and self.alias is not None:
            raise ValueError("give `values` or `alias`, not both")
        return self


class Route53Restore(AwsParams):
    """Put a record set back as it was before aws.route53.failover."""

    zone: str = Field(min_length=1, description="The hosted zone: its id, or its domain name.")
    previous: dict[str, Any] | None = Field(
        description="The record set to restore: `{{ step.output.previous }}` of aws.route53.failover."
    )
    wait: Duration = Field(default=timedelta(minutes=5), description="How long to wait for the change to be INSYNC.")

    @field_validator("previous")
    @classmethod
    def _a_record_set(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not (isinstance(value.get("Name"), str) and isinstance(value.get("Type"), str)):
            raise ValueError("a Route 53 record set has at least `Name` and `Type`")
        return value


class Route53Result(BaseModel):
    model_config = ConfigDict(frozen=True)

    zone_id: str
    name: str
    type: str
    set_identifier: str | None
    previous: dict[str, Any] | None = Field(
        description="The record set before the change (Route 53's shape); None when not known."
    )
    current: dict[str, Any] | None = Field(description="The record set now.")
    changed: bool = Field(description="False when the record already was as asked: nothing was called.")
    change_id: str | None = None
    status: str = Field(description="INSYNC, PENDING (still propagating when `wait` ran out), or unchanged.")
    note: str = ""


# --- failover ---------------------------------------------------------------------------------


async def failover(
    params: Route53Failover, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> Route53Result:
    aws = await Aws.connect(params, context, ["route53"], session_factory)
    zone_id, previous, desired = await _plan(aws, params)
    if _target(previous) == _target(desired):
        return _unchanged(zone_id, previous, previous, "the record already points at the standby: nothing was changed")
    await context.publish(
        f"route53-before-{context.step_id}",
        f"### aws.route53.failover: the record set before\n\n```json\n{json.dumps(previous, indent=2)}\n```\n",
    )
    return await _upsert(aws, zone_id, desired, previous, params.wait, context)


async def reconcile_failover(
    params: Route53Failover, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> Route53Result | None:
    """The result if the record already points at the standby (a restarted step), else None."""
    aws = await Aws.connect(params, context, ["route53"], session_factory)
    zone_id, current, desired = await _plan(aws, params)
    if _target(current) != _target(desired):
        return None
    return _unchanged(zone_id, None, current, "found done: an earlier attempt of this step had changed the "
                      f"record; the record set before it is in the run's note route53-before-{context.step_id}")


async def preview_failover(
    params: Route53Failover, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> dict[str, Any]:
    """What the failover would change, read from the zone now (for approval evidence)."""
    aws = await Aws.connect(params, context, ["route53"], session_factory)
    zone_id, current, desired = await _plan(aws, params)
    label = f"{current['Name']} ({current['Type']}{', ' + current['SetIdentifier'] if current.get('SetIdentifier') else ''})"
    if _target(current) == _target(desired):
        summary = f"{label} already answers {_describe(desired)}: nothing would change."
    else:
        summary = f"This will point {label} at {_describe(desired)}; it answers {_describe(current)} now."
    return {
        "action": "aws.route53.failover",
        "summary": summary,
        "zone_id": zone_id,
        "current": current,
        "proposed": desired,
    }


async def _plan(aws: Aws, params: Route53Failover) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(zone id, the record set to change as it is now, the record set as it should be)."""
    zone_id = await _zone_id(aws, params.zone)
    records = await _records(aws, zone_id, params.name, params.type)
    where = f"{_fqdn(params.name)} {params.type} in zone {params.zone}"
    if params.values is not None or params.alias is not None:
        matching = [r for r in records if r.get("SetIdentifier") == params.set_identifier]
        if not matching:
            which = f" with set identifier {params.set_identifier!r}" if params.set_identifier else ""
            raise ActionFailed(
                f"no record {where}{which}: a failover changes an existing record", changed=False,
                todo="create the record first, or fix `zone`, `name`, `type` or `set_identifier`",
            )
        current = matching[0]
        if params.alias is not None:
            target: dict[str, Any] = {"AliasTarget": {
                "HostedZoneId": params.alias.hosted_zone_id,
                "DNSName": params.alias.dns_name,
                "EvaluateTargetHealth": params.alias.evaluate_target_health,
            }}
        else:
            target = {"TTL": params.ttl, "ResourceRecords": [{"Value": v} for v in params.values or []]}
    else:
        pair = {r.get("Failover"): r for r in records if r.get("Failover")}
        if "PRIMARY" not in pair or "SECONDARY" not in pair:
            raise ActionFailed(
                f"{where} has no PRIMARY and SECONDARY failover records", changed=False,
                todo="give `values` or `alias` to point the record at a standby, or fix `zone`, `name` and `type`",
            )
        current = pair["PRIMARY"]
        target = {k: v for k, v in pair["SECONDARY"].items() if k in _TARGET_FIELDS}
    desired = {k: v for k, v in current.items() if k not in _TARGET_FIELDS} | target
    return zone_id, current, desired


# --- restore ----------------------------------------------------------------------------------


async def restore(
    params: Route53Restore, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> Route53Result:
    previous = _previous(params)
    aws = await Aws.connect(params, context, ["route53"], session_factory)
    zone_id = await _zone_id(aws, params.zone)
    current = await _record_like(aws, zone_id, previous)
    if current is not None and _same(current, previous):
        return _unchanged(zone_id, current, current, "the record already is as it was: nothing was changed")
    return await _upsert(aws, zone_id, previous, current, params.wait, context)


async def reconcile_restore(
    params: Route53Restore, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> Route53Result | None:
    previous = _previous(params)
    aws = await Aws.connect(params, context, ["route53"], session_factory)
    zone_id = await _zone_id(aws, params.zone)
    current = await _record_like(aws, zone_id, previous)
    if current is None or not _same(current, previous):
        return None
    return _unchanged(zone_id, None, current, "found done: an earlier attempt of this step had restored the record")


def _previous(params: Route53Restore) -> dict[str, Any]:
    if params.previous is None:
        raise ActionFailed(
            "no record set to restore: the failover step's output has no `previous` (it found its change "
            "already made after a restart, so the record set before it was not known there)",
            changed=False,
            todo="restore the record by hand from the failover step's note `route53-before-<step>` in the run's artifacts",
        )
    return params.previous


async def _record_like(aws: Aws, zone_id: str, record: dict[str, Any]) -> dict[str, Any] | None:
    records = await _records(aws, zone_id, record["Name"], record["Type"])
    return next((r for r in records if r.get("SetIdentifier") == record.get("SetIdentifier")), None)


# --- shared -----------------------------------------------------------------------------------


async def _upsert(
    aws: Aws, zone_id: str, record: dict[str, Any], previous: dict[str, Any] | None, wait: timedelta,
    context: ActionContext,
) -> Route53Result:
    batch = {
        "Comment": f"siaga {context.runbook_id} {context.idempotency_key}"[:256],
        "Changes": [{"Action": "UPSERT", "ResourceRecordSet": record}],
    }
    # An UPSERT of the same record set is safe to repeat: the zone ends the same.
    answer = await aws.call("route53", "change_resource_record_sets", idempotent=True, HostedZoneId=zone_id, ChangeBatch=batch)
    change_id = answer["ChangeInfo"]["Id"]

    async def insync() -> str | None:
        info = (await aws.read("route53", "get_change", Id=change_id))["ChangeInfo"]
        return info["Status"] if info["Status"] == "INSYNC" else None

    status = await poll(insync, wait) or "PENDING"
    return Route53Result(
        zone_id=zone_id, name=record["Name"], type=record["Type"], set_identifier=record.get("SetIdentifier"),
        previous=previous, current=record, changed=True, change_id=change_id, status=status,
    )


def _unchanged(zone_id: str, previous: dict[str, Any] | None, current: dict[str, Any], note: str) -> Route53Result:
    return Route53Result(
        zone_id=zone_id, name=current["Name"], type=current["Type"], set_identifier=current.get("SetIdentifier"),
        previous=previous, current=current, changed=False, status="unchanged", note=note,
    )


async def _zone_id(aws: Aws, zone: str) -> str:
    """The hosted zone's id, given its id or its domain name."""
    if "." not in zone:
        return zone.removeprefix("/hostedzone/")
    answer = await aws.read("route53", "list_hosted_zones_by_name", DNSName=zone, MaxItems="100")
    found = [z["Id"].removeprefix("/hostedzone/") for z in answer["HostedZones"] if z["Name"].lower() == _fqdn(zone)]
    if len(found) != 1:
        raise ActionFailed(
            f"{'no' if not found else 'several'} hosted zones named {_fqdn(zone)}", changed=False,
            todo="give the zone's id as `zone` (Route 53 console, or `aws route53 list-hosted-zones`)",
        )
    return found[0]


async def _records(aws: Aws, zone_id: str, name: str, kind: str) -> list[dict[str, Any]]:
    """Every record set of `name` and `kind` in the zone (several with a routing policy)."""
    fqdn = _fqdn(name)
    pages = await aws.pages("route53", "list_resource_record_sets", HostedZoneId=zone_id,
                            StartRecordName=fqdn, StartRecordType=kind, PaginationConfig={"MaxItems": 300})
    return [
        r for page in pages for r in page["ResourceRecordSets"]
        if _fqdn(r["Name"]) == fqdn and r["Type"] == kind
    ]


def _fqdn(name: str) -> str:
    name = name.strip().lower().replace("\\052", "*")
    return name if name.endswith(".") else name + "."


def _target(record: dict[str, Any]) -> tuple[Any, ...]:
    """Where a record set points, in a form that compares equal whatever the spelling."""
    alias = record.get("AliasTarget")
    if alias:
        return ("alias", alias["DNSName"].lower().rstrip("."), alias["HostedZoneId"])
    return ("values", tuple(sorted(r["Value"] for r in record.get("ResourceRecords", []))))


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def normal(record: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in record.items() if k not in ("Name", "ResourceRecords", "AliasTarget")}
        return {**rest, "Name": _fqdn(record["Name"]), "target": _target(record)}

    return normal(a) == normal(b)


def _describe(record: dict[str, Any]) -> str:
    kind, *rest = _target(record)
    return f"alias {rest[0]}" if kind == "alias" else ", ".join(rest[0])
