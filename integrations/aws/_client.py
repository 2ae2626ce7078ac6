"""What every AWS action shares: the connection model, a boto3 session for it, calls that run off
the event loop and fail with an ActionFailed saying whether anything changed, polling, and the
deterministic names derived from a step's idempotency key.

Errors from AWS, as the actions see them:

* throttling, "service unavailable" and a refused connection changed nothing: retried here with
  backoff, whatever the call;
* other 5xx answers and read timeouts may have acted: retried here only for calls that are safe to
  repeat (reads, UPSERTs, FIFO publishes with a deduplication id), else left to the side-effect
  ledger and the action's reconcile;
* an unknown resource, missing permissions or bad parameters fail at once with AWS's own message
  and a to-do for a person.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from pydantic import Field, model_validator
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from siaga.actions import ActionContext, ActionFailed, ActionParams, Connection
from siaga.secrets import REDACTOR

T = TypeVar("T")

SessionFactory = Callable[..., boto3.session.Session]
"""Makes a boto3 session from boto3.Session's keyword arguments (profile_name, region_name,
aws_access_key_id, ...). The production default is `boto3.Session` itself."""

POLL_SECONDS = 5.0
"""How often a waiting action asks AWS again."""

_CONFIG = dict(
    # One attempt per boto3 call: retrying is decided here, where it is known whether the call is
    # safe to repeat (botocore would repeat a failover after a 500).
    retries={"mode": "standard", "total_max_attempts": 1},
    connect_timeout=10,
    read_timeout=60,
    user_agent_extra="siaga",
)
_ATTEMPTS = 4
_backoff = wait_random_exponential(multiplier=0.5, max=20)

_THROTTLED = frozenset({
    "Throttling", "ThrottlingException", "Throttled", "ThrottledException", "RequestLimitExceeded",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "RequestThrottled",
    "RequestThrottledException", "SlowDown", "PriorRequestNotComplete", "LimitExceededException",
})
_AUTH = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
    "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch",
    "AuthFailure", "InvalidAccessKeyId", "AuthorizationError",
})


class AwsError(ActionFailed):
    """An ActionFailed from an AWS answer, with AWS's error code (``DBClusterNotFoundFault``)."""

    def __init__(self, message: str, *, code: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.code = code


class AwsConnection(Connection):
    """An AWS account and region, in ``connections.yaml``::

        aws-prod:
          type: aws
          region: ap-southeast-1
          role_arn: arn:aws:iam::123456789012:role/siaga-crisis   # optional, assumed with STS
          access_key_id: secret://aws-prod-key-id                 # optional: else boto3's own
          secret_access_key: secret://aws-prod-secret-key         #   chain (env, profile, role)
          production: true
    """

    type: Literal["aws"] = "aws"
    region: str = Field(min_length=1, description="The region the actions call unless a step names another.")
    profile: str | None = Field(default=None, description="A profile of the AWS config files.")
    role_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:iam::", description="A role to assume with STS.")
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://", description="Another endpoint (a VPC endpoint, a test server).")
    access_key_id: str | None = Field(default=None, pattern=r"^secret://", description="secret://NAME of the access key id.")
    secret_access_key: str | None = Field(default=None, pattern=r"^secret://", description="secret://NAME of the secret access key.")

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> AwsConnection:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither (boto3's own chain)")
        return self


class AwsParams(ActionParams):
    """Parameters every AWS action takes."""

    connection: str | None = Field(
        default=None,
        description="The `type: aws` connection in connections.yaml; default the only (or `default: true`) one.",
    )
    region: str | None = Field(default=None, description="Call this region instead of the connection's.")


@dataclass(frozen=True)
class Aws:
    """One action's clients for one connection and region."""

    connection: AwsConnection
    region: str
    clients: dict[str, Any]

    @classmethod
    async def connect(
        cls,
        params: AwsParams,
        context: ActionContext,
        services: Iterable[str],
        session_factory: SessionFactory = boto3.Session,
    ) -> Aws:
        """Clients of `services` for the step's connection; raise ActionFailed saying what to fix."""
        connection = connection_for(params, context)
        region = params.region or connection.region
        keys: dict[str, str] = {}
        if connection.access_key_id and connection.secret_access_key:
            keys = {
                "aws_access_key_id": context.secret(connection.access_key_id),
                "aws_secret_access_key": context.secret(connection.secret_access_key),
            }
        services = tuple(services)

        def make() -> dict[str, Any]:
            session = session_factory(profile_name=connection.profile, region_name=region, **keys)
            if connection.role_arn:
                session = _assume_role(session, connection, region, context, session_factory)
            config = Config(region_name=region, **_CONFIG)  # type: ignore[arg-type]
            return {
                service: session.client(service, endpoint_url=connection.endpoint_url, config=config)
                for service in services
            }

        clients = await _guarded("sts" if connection.role_arn else "session", "connect", make, idempotent=True)
        return cls(connection, region, clients)

    async def call(self, service: str, operation: str, *, idempotent: bool = False, **kwargs: Any) -> dict[str, Any]:
        """``client.<operation>(**kwargs)`` in a worker thread; raise ActionFailed. `idempotent`
        says the call may be repeated when its outcome is unknown (reads always may)."""
        method = getattr(self.clients[service], operation)
        return await _guarded(service, operation, lambda: method(**kwargs), idempotent=idempotent)

    async def read(self, service: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        """A call that changes nothing: retried on any transient error."""
        return await self.call(service, operation, idempotent=True, **kwargs)

    async def pages(self, service: str, operation: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every page of a paginated read."""
        paginator = self.clients[service].get_paginator(operation)
        return await _guarded(service, operation, lambda: list(paginator.paginate(**kwargs)), idempotent=True)


def connection_for(params: AwsParams, context: ActionContext) -> AwsConnection:
    """The step's connection (in a drill, ActionContext.connection swaps a `production: true`
    one for its `sandbox`, or refuses it)."""
    return context.connection(AwsConnection, params.connection)


def _assume_role(
    session: boto3.session.Session, connection: AwsConnection, region: str, context: ActionContext,
    session_factory: SessionFactory,
) -> boto3.session.Session:
    sts = session.client("sts", endpoint_url=connection.endpoint_url, config=Config(region_name=region, **_CONFIG))  # type: ignore[arg-type]
    name = re.sub(r"[^\w+=,.@-]", "-", f"siaga-{context.runbook_id}-{context.step_id}")[:64]
    credentials = sts.assume_role(RoleArn=connection.role_arn, RoleSessionName=name)["Credentials"]
    # Temporary credentials are secrets too: keep them out of logs, outputs and errors.
    REDACTOR.add("aws-assumed-role-secret", credentials["SecretAccessKey"])
    REDACTOR.add("aws-assumed-role-token", credentials["SessionToken"])
    return session_factory(
        region_name=region,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


async def _guarded(service: str, operation: str, call: Callable[[], T], *, idempotent: bool) -> T:
    """Run the blocking `call` in a worker thread so the flow's event loop stays free; retry what
    is safe to retry; turn boto3's errors into ActionFailed."""

    def transient(error: BaseException) -> bool:
        return isinstance(error, ActionFailed) and error.retryable and (error.changed is False or idempotent)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(_ATTEMPTS), wait=_backoff, retry=retry_if_exception(transient), reraise=True
    )
    async for attempt in retrying:
        with attempt:
            try:
                return await asyncio.to_thread(call)
            except ActionFailed:
                raise
            except (ClientError, BotoCoreError) as exc:
                raise failure(service, operation, exc) from None
    raise AssertionError("unreachable")  # pragma: no cover


def failure(service: str, operation: str, error: Exception) -> ActionFailed:
    """What an error from boto3 means for the step: may it be retried, did anything change, and
    what must a person do."""
    operation = _operation_name(error, operation)
    what = f"AWS {service} {operation}"
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code", "Unknown"))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = REDACTOR.text(f"{what} failed: {code}: {info.get('Message', '')}".rstrip(": "))
        if code in _THROTTLED or status in (429, 503) or code == "ServiceUnavailable":
            return AwsError(message, code=code, retryable=True, changed=False)
        if status >= 500:
            return AwsError(message, code=code, retryable=True, changed=None)
        if code in _AUTH or status == 403:
            todo = f"check the AWS connection's credentials and its permission for {service}:{operation}"
            return AwsError(message, code=code, changed=False, todo=todo)
        if "NotFound" in code or code.startswith("NoSuch") or status == 404:
            todo = "check the names in the step's parameters and the connection's region, then run the step again"
            return AwsError(message, code=code, changed=False, todo=todo)
        if code.startswith("Invalid") and code.endswith("StateFault"):
            todo = ("the resource is busy (being modified, backed up or failed over): wait until it is "
                    "available and run the step again")
            return AwsError(message, code=code, retryable=True, changed=False, todo=todo)
        todo = "read AWS's message above, fix the step's parameters or the resource, and run the step again"
        return AwsError(message, code=code, changed=False, todo=todo)
    text = REDACTOR.text(f"{what} failed: {type(error).__name__}: {error}")
    if isinstance(error, EndpointConnectionError | ConnectTimeoutError):
        return ActionFailed(text, retryable=True, changed=False)
    if isinstance(error, ReadTimeoutError | ConnectionClosedError):
        return ActionFailed(text, retryable=True, changed=None)
    if isinstance(error, ParamValidationError):
        return ActionFailed(text, changed=False, todo="fix the step's parameters and run the step again")
    if isinstance(error, NoCredentialsError | PartialCredentialsError | ProfileNotFound | NoRegionError):
        todo = ("give the AWS connection credentials (access_key_id and secret_access_key as secret://, "
                "a profile or a role_arn), or run where boto3 finds them; then run the step again")
        return ActionFailed(text, changed=False, todo=todo)
    return ActionFailed(text, retryable=True, changed=None)


def _operation_name(error: Exception, fallback: str) -> str:
    return getattr(error, "operation_name", None) or fallback


async def poll(check: Callable[[], Awaitable[T | None]], within: timedelta, every: float | None = None) -> T | None:
    """Ask `check` until it answers something or `within` has passed (it is always asked once)."""
    every = POLL_SECONDS if every is None else every
    deadline = time.monotonic() + within.total_seconds()
    while True:
        found = await check()
        if found is not None:
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        await asyncio.sleep(min(every, left))


def derived_name(key: str, *, label: str | None = None, limit: int = 63) -> str:
    """A name for what a step creates, derived from its idempotency key, that RDS snapshot
    identifiers (and DynamoDB backup names) accept: ``siaga-`` and the readable `label` (default
    the key) in lowercase letters, digits and single hyphens, cut to fit `limit` characters, then a
    hash of the whole key, so that keys cut short stay distinct. The same key always gives the
    same name."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    readable = re.sub(r"[^a-z0-9]+", "-", f"siaga-{key if label is None else label}".lower()).strip("-")
    readable = readable[: limit - len(digest) - 1].rstrip("-")
    return f"{readable}-{digest}"


def step_name(context: ActionContext) -> str:
    """`derived_name` of the step's idempotency key, labelled step first (``siaga-snapshot-ledger-
    inc-42-<hash>``) so that a person reading a list of snapshots sees which step took each."""
    return derived_name(context.idempotency_key, label=f"{context.step_id}-{context.incident_id or context.run_id}")


def deduplication_id(key: str) -> str:
    """An SNS/SQS FIFO MessageDeduplicationId (at most 128 characters) for an idempotency key."""
    return hashlib.sha256(key.encode()).hexdigest()


def isoformat(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (None if value is None else str(value))
