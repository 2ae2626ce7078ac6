"""DynamoDB: an on-demand backup of a table, named after the step so that a retry finds it.

DynamoDB takes no idempotency token for backups and allows two backups of the same name, so the
action looks for its own backup (by its derived name) before it creates one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import boto3
from pydantic import BaseModel, ConfigDict, Field

from siaga.actions import ActionContext, ActionFailed
from siaga.runbook.durations import Duration, format_duration

from ._client import Aws, AwsParams, SessionFactory, isoformat, poll, step_name


class DynamodbBackup(AwsParams):
    """Back up a DynamoDB table (on-demand backup)."""

    table: str = Field(min_length=3, description="The table's name or ARN.")
    wait: Duration = Field(default=timedelta(minutes=30), description="How long to wait for AVAILABLE.")


class BackupResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    table: str
    region: str
    backup_name: str
    backup_arn: str
    status: str
    created_at: str | None
    found_existing: bool = Field(description="True when an earlier attempt of this step had created it.")


def backup_name(context: ActionContext) -> str:
    """The step's backup name, derived from its idempotency key."""
    return step_name(context)


async def backup(
    params: DynamodbBackup, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> BackupResult:
    aws = await Aws.connect(params, context, ["dynamodb"], session_factory)
    found = await _existing(aws, params, context)
    if found is not None:
        return found
    name = backup_name(context)
    details = (await aws.call("dynamodb", "create_backup", TableName=params.table, BackupName=name))["BackupDetails"]
    return await _available(aws, params, details, found_existing=False)


async def reconcile_backup(
    params: DynamodbBackup, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> BackupResult | None:
    aws = await Aws.connect(params, context, ["dynamodb"], session_factory)
    return await _existing(aws, params, context)


async def _existing(aws: Aws, params: DynamodbBackup, context: ActionContext) -> BackupResult | None:
    name = backup_name(context)
    pages = await aws.pages("dynamodb", "list_backups", TableName=params.table, BackupType="USER")
    mine = [b for page in pages for b in page.get("BackupSummaries", []) if b.get("BackupName") == name]
    if not mine:
        return None
    oldest = min(mine, key=lambda b: str(b.get("BackupCreationDateTime")))
    return await _available(aws, params, oldest, found_existing=True)


async def _available(aws: Aws, params: DynamodbBackup, backup: dict[str, Any], *, found_existing: bool) -> BackupResult:
    arn = backup["BackupArn"]

    async def ready() -> dict[str, Any] | None:
        nonlocal backup
        if backup.get("BackupStatus") == "AVAILABLE":
            return backup
        if backup.get("BackupStatus") == "DELETED":
            raise ActionFailed(f"backup {arn} was deleted", changed=None,
                               todo="run the step again under a new incident, or take the backup by hand")
        described = await aws.read("dynamodb", "describe_backup", BackupArn=arn)
        backup = {**backup, **described["BackupDescription"]["BackupDetails"]}
        return backup if backup.get("BackupStatus") == "AVAILABLE" else None

    if await poll(ready, params.wait) is None:
        raise ActionFailed(
            f"backup {arn} of {params.table} is still {backup.get('BackupStatus')} after {format_duration(params.wait)}",
            retryable=True, changed=None, todo="give the step a longer `wait`; a retry finds the same backup",
        )
    return BackupResult(
        table=params.table,
        region=aws.region,
        backup_name=backup["BackupName"],
        backup_arn=arn,
        status=backup["BackupStatus"],
        created_at=isoformat(backup.get("BackupCreationDateTime")),
        found_existing=found_existing,
    )
