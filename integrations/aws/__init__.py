"""AWS actions, through boto3 (each call in a worker thread, so the flow's event loop stays free).

| action | risk | undo | in a drill | what it does |
| --- | --- | --- | --- | --- |
| `aws.rds.failover` | destructive | none (see below) | recorded | fail an Aurora/RDS cluster over to a named instance; waits until it is the writer; returns old and new writer |
| `aws.rds.snapshot_cluster` | change | none | recorded | snapshot a DB cluster under a name derived from the step; waits until `available` |
| `aws.rds.snapshot_instance` | change | none | recorded | the same for a DB instance |
| `aws.route53.failover` | destructive | `aws.route53.restore` | recorded | flip a PRIMARY/SECONDARY failover pair, or point a record at a standby; returns the record set before |
| `aws.route53.restore` | change | none | recorded | put back the record set `aws.route53.failover` returned as `previous` |
| `aws.dynamodb.backup` | change | none | recorded | on-demand backup of a table under a name derived from the step |
| `aws.s3.copy` | change | none | recorded | copy the objects under a prefix to an evidence bucket, with a legal hold where Object Lock allows |
| `aws.sns.publish` | notify | none | sent with `[DRILL]` | publish to a topic (FIFO topics deduplicate by the step) |

Every step names a ``type: aws`` connection (`connection:`, or the only one configured; see
`AwsConnection`) and may name another `region:`. Every change is idempotent under retries,
restarts and duplicate runs: snapshot and backup names derive from the step's idempotency key,
each action has a reconcile that finds its own effect when an earlier attempt stopped before its
outcome was recorded, and a failover whose target already is the writer calls nothing.

`aws.rds.failover` has no undo partner: failing back to the old writer is a planned change, and
the old writer may be the broken part. A runbook can still write
``undo: {action: aws.rds.failover, with: {cluster: ..., target: "{{ step.output.old_writer }}"}}``.

`PREVIEWS` maps an action to ``preview(params, context) -> dict``: what it would do, read from AWS
now (the writer a failover replaces, the record a DNS failover changes), for approval evidence.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from siaga.actions import ActionContext, ActionSpec, Risk

from . import dynamodb, rds, route53, s3, sns
from ._client import AwsConnection, AwsError, AwsParams, SessionFactory

__all__ = ["ACTIONS", "PREVIEWS", "AwsConnection", "AwsError", "AwsParams", "SessionFactory"]

Preview = Callable[[Any, ActionContext], Awaitable[dict[str, Any]]]
"""Reads what an action would change and says so: ``{"summary": "This will ...", ...}``; raises
ActionFailed when AWS cannot be read (an unknown cluster or zone)."""

ACTIONS = (
    ActionSpec(
        name="aws.rds.failover",
        params=rds.RdsFailover,
        run=rds.failover,
        reconcile=rds.reconcile_failover,
        preview=rds.preview_failover,
        risk=Risk.DESTRUCTIVE,
        summary="Fail an Aurora/RDS cluster over to a named instance and wait until it is the writer.",
    ),
    ActionSpec(
        name="aws.rds.snapshot_cluster",
        params=rds.SnapshotCluster,
        run=rds.snapshot_cluster,
        reconcile=rds.reconcile_snapshot_cluster,
        risk=Risk.CHANGE,
        summary="Snapshot a DB cluster (named after the step, so a retry finds it) and wait until available.",
    ),
    ActionSpec(
        name="aws.rds.snapshot_instance",
        params=rds.SnapshotInstance,
        run=rds.snapshot_instance,
        reconcile=rds.reconcile_snapshot_instance,
        risk=Risk.CHANGE,
        summary="Snapshot a DB instance (named after the step, so a retry finds it) and wait until available.",
    ),
    ActionSpec(
        name="aws.route53.failover",
        params=route53.Route53Failover,
        run=route53.failover,
        reconcile=route53.reconcile_failover,
        preview=route53.preview_failover,
        risk=Risk.DESTRUCTIVE,
        undo="aws.route53.restore",
        summary="Point a DNS name at its standby (flip a failover pair, or UPSERT a standby target).",
    ),
    ActionSpec(
        name="aws.route53.restore",
        params=route53.Route53Restore,
        run=route53.restore,
        reconcile=route53.reconcile_restore,
        risk=Risk.CHANGE,
        summary="Put back the record set that aws.route53.failover replaced (its output `previous`).",
    ),
    ActionSpec(
        name="aws.dynamodb.backup",
        params=dynamodb.DynamodbBackup,
        run=dynamodb.backup,
        reconcile=dynamodb.reconcile_backup,
        risk=Risk.CHANGE,
        summary="Back up a DynamoDB table (named after the step, so a retry finds it).",
    ),
    ActionSpec(
        name="aws.s3.copy",
        params=s3.S3Copy,
        run=s3.copy,
        reconcile=s3.reconcile_copy,
        risk=Risk.CHANGE,
        summary="Preserve evidence: copy the objects under a prefix to an evidence bucket, legal hold where possible.",
    ),
    ActionSpec(
        name="aws.sns.publish",
        params=sns.SnsPublish,
        run=sns.publish,
        risk=Risk.NOTIFY,
        summary="Publish a message to an SNS topic (deduplicated by the step on FIFO topics).",
        message_fields=("subject", "message"),
    ),
)

PREVIEWS: dict[str, Preview] = {
    "aws.rds.failover": rds.preview_failover,
    "aws.route53.failover": route53.preview_failover,
}
