"""S3: preserve evidence by copying the objects under a prefix into an evidence bucket.

Each object ``KEY`` of ``SOURCE`` is copied to ``<evidence_prefix>SOURCE/KEY`` in the evidence
bucket; the prefix defaults to ``siaga-evidence/<incident or run>/<step>/``, so a retry writes the
same keys. Where the evidence bucket has S3 Object Lock enabled, every copy gets a legal hold
(kept until someone with ``s3:PutObjectLegalHold`` lifts it); `require_lock: true` refuses to copy
into a bucket without it. Objects over 5 GiB are copied in parts (their ETag then differs from the
source's; the result gives both).
"""

from __future__ import annotations

from typing import Any

import boto3
from pydantic import BaseModel, ConfigDict, Field

from siaga.actions import ActionContext, ActionFailed

from ._client import Aws, AwsError, AwsParams, SessionFactory

_SINGLE_COPY_LIMIT = 5 * 1024**3
"""CopyObject copies at most 5 GiB; larger objects are copied in parts."""


class S3Copy(AwsParams):
    """Copy the objects under a prefix into an evidence bucket (with a legal hold where it can)."""

    bucket: str = Field(min_length=3, description="The bucket holding the evidence now.")
    prefix: str = Field(default="", description="Copy the objects whose keys start with this.")
    evidence_bucket: str = Field(min_length=3, description="Where the copies go.")
    evidence_prefix: str | None = Field(
        default=None, description="Key prefix of the copies; default siaga-evidence/<incident or run>/<step>/."
    )
    legal_hold: bool = Field(default=True, description="Put a legal hold on each copy where the bucket has Object Lock.")
    require_lock: bool = Field(default=False, description="Refuse to copy into a bucket without Object Lock.")
    max_objects: int = Field(default=1000, ge=1, le=100_000, description="Refuse a prefix holding more objects.")


class CopiedObject(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    evidence_key: str
    etag: str = Field(description="The copy's ETag.")
    source_etag: str
    size: int
    version_id: str | None = None
    legal_hold: bool = False


class S3CopyResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: str
    evidence_bucket: str
    evidence_prefix: str
    object_lock: bool = Field(description="Whether the evidence bucket has Object Lock enabled.")
    copied: list[CopiedObject]
    found_existing: bool = False


def evidence_prefix(params: S3Copy, context: ActionContext) -> str:
    if params.evidence_prefix is not None:
        return params.evidence_prefix
    return f"siaga-evidence/{context.incident_id or context.run_id}/{context.step_id}/"


async def copy(params: S3Copy, context: ActionContext, *, session_factory: SessionFactory = boto3.Session) -> S3CopyResult:
    aws = await Aws.connect(params, context, ["s3"], session_factory)
    locked = await _object_lock(aws, params.evidence_bucket)
    if params.require_lock and not locked:
        raise ActionFailed(
            f"evidence bucket {params.evidence_bucket} has no Object Lock: copies there could be deleted",
            changed=False,
            todo="use a bucket created with Object Lock, or set `require_lock: false`",
        )
    sources = await _sources(aws, params)
    prefix = evidence_prefix(params, context)
    hold = params.legal_hold and locked
    copied = []
    for source in sources:
        target = f"{prefix}{params.bucket}/{source['Key']}"
        copied.append(await _copy_one(aws, params, source, target, hold))
    return S3CopyResult(
        bucket=params.bucket, evidence_bucket=params.evidence_bucket, evidence_prefix=prefix,
        object_lock=locked, copied=copied,
    )


async def reconcile_copy(
    params: S3Copy, context: ActionContext, *, session_factory: SessionFactory = boto3.Session
) -> S3CopyResult | None:
    """The result if every object has its copy already (a restarted step), else None (copying
    again is harmless: the copies are overwritten, or kept as older versions)."""
    aws = await Aws.connect(params, context, ["s3"], session_factory)
    prefix = evidence_prefix(params, context)
    sources = await _sources(aws, params)
    pages = await aws.pages("s3", "list_objects_v2", Bucket=params.evidence_bucket, Prefix=f"{prefix}{params.bucket}/")
    present = {o["Key"]: o for page in pages for o in page.get("Contents", [])}
    locked = await _object_lock(aws, params.evidence_bucket)
    hold = params.legal_hold and locked
    copied = []
    for source in sources:
        target = present.get(f"{prefix}{params.bucket}/{source['Key']}")
        if target is None or target["Size"] != source["Size"]:
            return None
        if hold and not await _held(aws, params.evidence_bucket, target["Key"]):
            return None
        copied.append(CopiedObject(key=source["Key"], evidence_key=target["Key"], etag=target["ETag"],
                                   source_etag=source["ETag"], size=source["Size"], legal_hold=hold))
    return S3CopyResult(
        bucket=params.bucket, evidence_bucket=params.evidence_bucket, evidence_prefix=prefix,
        object_lock=locked, copied=copied, found_existing=True,
    )


async def _held(aws: Aws, bucket: str, key: str) -> bool:
    try:
        answer = await aws.read("s3", "get_object_legal_hold", Bucket=bucket, Key=key)
    except AwsError as exc:
        if exc.code == "NoSuchObjectLockConfiguration":
            return False
        raise
    return answer.get("LegalHold", {}).get("Status") == "ON"


async def _sources(aws: Aws, params: S3Copy) -> list[dict[str, Any]]:
    pages = await aws.pages("s3", "list_objects_v2", Bucket=params.bucket, Prefix=params.prefix,
                            PaginationConfig={"MaxItems": params.max_objects + 1})
    objects = [o for page in pages for o in page.get("Contents", [])]
    if len(objects) > params.max_objects:
        raise ActionFailed(
            f"more than {params.max_objects} objects under s3://{params.bucket}/{params.prefix}", changed=False,
            todo="narrow `prefix`, or raise `max_objects` (and the step's timeout)",
        )
    if not objects:
        raise ActionFailed(f"no objects under s3://{params.bucket}/{params.prefix}", changed=False,
                           todo="check `bucket` and `prefix`")
    return objects


async def _object_lock(aws: Aws, bucket: str) -> bool:
    try:
        answer = await aws.read("s3", "get_object_lock_configuration", Bucket=bucket)
    except AwsError as exc:
        if exc.code == "ObjectLockConfigurationNotFoundError":
            return False
        raise
    return answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


async def _copy_one(aws: Aws, params: S3Copy, source: dict[str, Any], target: str, hold: bool) -> CopiedObject:
    origin = {"Bucket": params.bucket, "Key": source["Key"]}
    if source["Size"] <= _SINGLE_COPY_LIMIT:
        answer = await aws.call("s3", "copy_object", idempotent=True, Bucket=params.evidence_bucket, Key=target,
                                CopySource=origin, MetadataDirective="COPY", TaggingDirective="COPY")
        etag, version = answer["CopyObjectResult"]["ETag"], answer.get("VersionId")
    else:  # pragma: no cover - needs an object over 5 GiB
        await aws.call("s3", "copy", idempotent=True, CopySource=origin, Bucket=params.evidence_bucket, Key=target)
        head = await aws.read("s3", "head_object", Bucket=params.evidence_bucket, Key=target)
        etag, version = head["ETag"], head.get("VersionId")
    if hold:
        # Set after the copy, not with it (CopyObject's ObjectLockLegalHoldStatus): moto refuses
        # that without a Content-MD5 header, which boto3 does not send for a copy. A crash between
        # the two is caught by reconcile_copy, which checks the holds.
        extra = {"VersionId": version} if version else {}
        await aws.call("s3", "put_object_legal_hold", idempotent=True, Bucket=params.evidence_bucket, Key=target,
                       LegalHold={"Status": "ON"}, **extra)
    return CopiedObject(key=source["Key"], evidence_key=target, etag=etag, source_etag=source["ETag"],
                        size=source["Size"], version_id=version, legal_hold=hold)
