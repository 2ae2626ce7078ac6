"""RDS and Aurora: fail a cluster over to a named instance; snapshot a cluster or an instance.

`aws.rds.failover` has no automatic undo: failing back to the old writer is a planned change (the
old writer may be the broken part). A runbook that wants it anyway says so::

    undo: {action: aws.rds.failover, with: {cluster: ledger-prod, target: "{{ step.output.old_writer }}"}}
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3
from pydantic import BaseModel, ConfigDict, Field

from siaga.actions import ActionContext, ActionFailed
from siaga.runbook.durations import Duration, format_duration

from ._client import Aws, AwsError, AwsParams, SessionFactory, isoformat, poll, step_name

_FAILING_OVER = "failing-over"


class RdsFailover(AwsParams):
    """Fail an Aurora (or Multi-AZ DB) cluster over so that `target` becomes its writer."""

    cluster: str = Field(min_length=1, description="The DB cluster identifier.")
    target: str = Field(min_length=1, description="The instance that becomes the writer.")
    wait: Duration = Field(
        default=timedelta(minutes=5),
        description="How long to wait for the target to be the writer (keep it under the step's timeout).",
    )


class FailoverResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    cluster: str
    region: str
    old_writer: str | None = Field(
        description="The writer before; None when a restarted step found the failover already done."
    )
    new_writer: str
    failed_over: bool = Field(description="False when the target already was the writer: nothing was called.")
    status: str
    waited: str = "0s"
    note: str = ""


class SnapshotCluster(AwsParams):
    """Snapshot a DB cluster (Aurora); the snapshot's name comes from the step, so a retry finds it."""

    cluster: str = Field(min_length=1, description="The DB cluster identifier.")
    wait: Duration = Field(default=timedelta(minutes=30), description="How long to wait for `available`.")


class SnapshotInstance(AwsParams):
    """Snapshot a DB instance; the snapshot's name comes from the step, so a retry finds it."""

    instance: str = Field(min_length=1, description="The DB instance identifier.")
    wait: Duration = Field(default=timedelta(minutes=30), description="How long to wait for `available`.")


class SnapshotResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    snapshot_id: str
    snapshot_arn: str | None
    source: str = Field(description="The cluster or instance snapshotted.")
    kind: str = Field(description="cluster or instance")
    region: str
    status: str
    created_at: str | None
    found_existing: bool = Field(description="True when an earlier attempt of this step had created it.")


# --- failover ---------------------------------------------------------------------------------


async def failover(
    params: RdsFailover, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> FailoverResult:
    aws = await Aws.connect(params, context, ["rds"], session_factory)
    started = time.monotonic()
    cluster = await _settled(aws, params, params.wait)
    members = _members(cluster)
    if params.target not in members:
        raise ActionFailed(
            f"instance {params.target} is not a member of cluster {params.cluster} "
            f"(members: {', '.join(members) or 'none'})",
            changed=False,
            todo="name one of the cluster's instances as `target` and run the step again",
        )
    writer = _writer(cluster)
    if writer == params.target:
        return _result(aws, params, cluster, writer, failed_over=False, started=started,
                       note="the target already is the writer: nothing was changed")
    await context.publish(
        f"rds-failover-{context.step_id}",
        f"### aws.rds.failover\n\nCluster `{params.cluster}` ({aws.region}): writer `{writer}`; "
        f"failing over to `{params.target}`.\n",
    )
    await aws.call("rds", "failover_db_cluster", DBClusterIdentifier=params.cluster,
                   TargetDBInstanceIdentifier=params.target)
    left = params.wait - timedelta(seconds=time.monotonic() - started)
    done = await poll(lambda: _if_writer(aws, params), max(left, timedelta(0)))
    if done is None:
        now = await _describe(aws, params.cluster)
        raise ActionFailed(
            f"asked {params.cluster} to fail over to {params.target}, but after {format_duration(params.wait)} "
            f"the writer is {_writer(now) or 'none'} (status {now.get('Status')})",
            retryable=True,
            changed=None,
            todo="look at the cluster in the RDS console; a retry of the step checks it again before acting",
        )
    return _result(aws, params, done, writer, failed_over=True, started=started)


async def reconcile_failover(
    params: RdsFailover, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> FailoverResult | None:
    """The failover's result if the target is the writer already (a restarted step), else None."""
    aws = await Aws.connect(params, context, ["rds"], session_factory)
    started = time.monotonic()
    cluster = await _settled(aws, params, params.wait)
    if _writer(cluster) != params.target:
        return None
    return _result(aws, params, cluster, None, failed_over=True, started=started,
                   note="found done: an earlier attempt of this step had failed over; the writer before it is not known here")


async def preview_failover(
    params: RdsFailover, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> dict[str, Any]:
    """What the failover would do, read from the cluster now (for approval evidence)."""
    aws = await Aws.connect(params, context, ["rds"], session_factory)
    cluster = await _describe(aws, params.cluster)
    writer, members = _writer(cluster), _members(cluster)
    where = f"cluster {params.cluster} ({aws.region})"
    if params.target == writer:
        summary = f"{params.target} already is the writer of {where}: nothing would change."
    elif params.target not in members:
        summary = f"{params.target} is not an instance of {where} (members: {', '.join(members)}): the step would fail."
    else:
        summary = (
            f"This will promote instance {params.target} to writer of {where}; the current writer is "
            f"{writer or 'none'}. Connections to the writer endpoint drop while it switches."
        )
    return {
        "action": "aws.rds.failover",
        "summary": summary,
        "cluster": params.cluster,
        "region": aws.region,
        "engine": cluster.get("Engine"),
        "status": cluster.get("Status"),
        "current_writer": writer,
        "target": params.target,
        "members": members,
    }


async def _describe(aws: Aws, cluster: str) -> dict[str, Any]:
    answer = await aws.read("rds", "describe_db_clusters", DBClusterIdentifier=cluster)
    return answer["DBClusters"][0]


async def _settled(aws: Aws, params: RdsFailover, within: timedelta) -> dict[str, Any]:
    """The cluster, once no failover is in progress (or as it is when `within` runs out)."""
    cluster = await _describe(aws, params.cluster)
    if cluster.get("Status") != _FAILING_OVER:
        return cluster

    async def settled() -> dict[str, Any] | None:
        found = await _describe(aws, params.cluster)
        return None if found.get("Status") == _FAILING_OVER else found

    return await poll(settled, within) or await _describe(aws, params.cluster)


async def _if_writer(aws: Aws, params: RdsFailover) -> dict[str, Any] | None:
    cluster = await _describe(aws, params.cluster)
    return cluster if _writer(cluster) == params.target and cluster.get("Status") == "available" else None


def _writer(cluster: dict[str, Any]) -> str | None:
    return next((m["DBInstanceIdentifier"] for m in cluster.get("DBClusterMembers", []) if m.get("IsClusterWriter")), None)


def _members(cluster: dict[str, Any]) -> list[str]:
    return [m["DBInstanceIdentifier"] for m in cluster.get("DBClusterMembers", [])]


def _result(
    aws: Aws, params: RdsFailover, cluster: dict[str, Any], old: str | None, *, failed_over: bool,
    started: float, note: str = "",
) -> FailoverResult:
    return FailoverResult(
        cluster=params.cluster,
        region=aws.region,
        old_writer=old,
        new_writer=_writer(cluster) or params.target,
        failed_over=failed_over,
        status=str(cluster.get("Status")),
        waited=format_duration(timedelta(seconds=round(time.monotonic() - started))),
        note=note,
    )


# --- snapshots --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    """The cluster and instance snapshot APIs differ only in names."""

    kind: str
    create: str
    describe: str
    source: str
    identifier: str
    one: str
    many: str
    arn: str
    exists: str


_CLUSTER = _Kind("cluster", "create_db_cluster_snapshot", "describe_db_cluster_snapshots", "DBClusterIdentifier",
                 "DBClusterSnapshotIdentifier", "DBClusterSnapshot", "DBClusterSnapshots", "DBClusterSnapshotArn",
                 "DBClusterSnapshotAlreadyExistsFault")
_INSTANCE = _Kind("instance", "create_db_snapshot", "describe_db_snapshots", "DBInstanceIdentifier",
                  "DBSnapshotIdentifier", "DBSnapshot", "DBSnapshots", "DBSnapshotArn", "DBSnapshotAlreadyExists")


def snapshot_id(context: ActionContext) -> str:
    """The step's snapshot identifier: derived from its idempotency key, so every attempt and
    every run of the same incident's step names the same snapshot."""
    return step_name(context)


async def snapshot_cluster(
    params: SnapshotCluster, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> SnapshotResult:
    return await _snapshot(_CLUSTER, params.cluster, params, context, session_factory)


async def snapshot_instance(
    params: SnapshotInstance, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> SnapshotResult:
    return await _snapshot(_INSTANCE, params.instance, params, context, session_factory)


async def reconcile_snapshot_cluster(
    params: SnapshotCluster, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> SnapshotResult | None:
    aws = await Aws.connect(params, context, ["rds"], session_factory)
    return await _existing(aws, _CLUSTER, params.cluster, params.wait, snapshot_id(context))


async def reconcile_snapshot_instance(
    params: SnapshotInstance, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> SnapshotResult | None:
    aws = await Aws.connect(params, context, ["rds"], session_factory)
    return await _existing(aws, _INSTANCE, params.instance, params.wait, snapshot_id(context))


async def _snapshot(
    kind: _Kind, source: str, params: SnapshotCluster | SnapshotInstance, context: ActionContext,
    session_factory: SessionFactory,
) -> SnapshotResult:
    aws = await Aws.connect(params, context, ["rds"], session_factory)
    identifier = snapshot_id(context)
    try:
        answer = await aws.call("rds", kind.create, **{kind.source: source, kind.identifier: identifier},
                                Tags=_tags(context))
    except AwsError as exc:
        if exc.code != kind.exists:
            raise
        found = await _existing(aws, kind, source, params.wait, identifier)
        if found is None:  # pragma: no cover - deleted between the two calls
            raise
        return found
    return await _available(aws, kind, source, params.wait, answer[kind.one], found_existing=False)


async def _existing(aws: Aws, kind: _Kind, source: str, wait: timedelta, identifier: str) -> SnapshotResult | None:
    """The snapshot `identifier` once available, or None if there is none."""
    try:
        answer = await aws.read("rds", kind.describe, **{kind.identifier: identifier})
    except AwsError as exc:
        if exc.code and "NotFound" in exc.code:
            return None
        raise
    snapshot = answer[kind.many][0]
    if snapshot.get(kind.source) != source:
        raise ActionFailed(
            f"snapshot {identifier} exists but is of {kind.kind} {snapshot.get(kind.source)}, not {source}",
            changed=False,
            todo="this step's snapshot name was used for another database: check the runbook, and delete or keep that snapshot",
        )
    return await _available(aws, kind, source, wait, snapshot, found_existing=True)


async def _available(
    aws: Aws, kind: _Kind, source: str, wait: timedelta, snapshot: dict[str, Any], *, found_existing: bool
) -> SnapshotResult:
    identifier = snapshot[kind.identifier]

    async def ready() -> dict[str, Any] | None:
        nonlocal snapshot
        status = snapshot.get("Status")
        if status == "available":
            return snapshot
        if status in ("failed", "error"):
            raise ActionFailed(
                f"snapshot {identifier} of {kind.kind} {source} {status}", changed=None,
                todo=f"delete the snapshot {identifier} (a retry finds it by that name) and run the step again",
            )
        snapshot = (await aws.read("rds", kind.describe, **{kind.identifier: identifier}))[kind.many][0]
        return snapshot if snapshot.get("Status") == "available" else None

    if await poll(ready, wait) is None:
        raise ActionFailed(
            f"snapshot {identifier} of {kind.kind} {source} is still {snapshot.get('Status')} after "
            f"{format_duration(wait)} ({snapshot.get('PercentProgress', 0)}%)",
            retryable=True, changed=None,
            todo="give the step a longer `wait` (and timeout); a retry finds the same snapshot",
        )
    return SnapshotResult(
        snapshot_id=identifier,
        snapshot_arn=snapshot.get(kind.arn),
        source=source,
        kind=kind.kind,
        region=aws.region,
        status=str(snapshot.get("Status")),
        created_at=isoformat(snapshot.get("SnapshotCreateTime")),
        found_existing=found_existing,
    )


def _tags(context: ActionContext) -> list[dict[str, str]]:
    def clean(value: str) -> str:
        return re.sub(r"[^\w .:/=+\-@]", "_", value)[:256]

    return [
        {"Key": "siaga:idempotency-key", "Value": clean(context.idempotency_key)},
        {"Key": "siaga:runbook", "Value": clean(context.runbook_id)},
        {"Key": "siaga:step", "Value": clean(context.step_id)},
    ]
