"""The action registry: what a runbook step can do, how risky it is, and how it behaves in a drill.

An action is a typed async function ``run(params, context) -> result`` with a pydantic parameter
model. The registry is a plain value handed to whoever needs it (the validator, the compiler, the
CLI); nothing registers itself globally. Integrations declare their actions in an ``ACTIONS`` tuple.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .secrets import SecretNotFound, SecretSource, resolve_secret


class Connection(BaseModel):
    """Base of provider connection models: a `type` literal, and whether it reaches production."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    production: bool = False
    """A live production system: drills never call it (they use its `sandbox` or record)."""
    sandbox: str | None = None
    """The connection drills use instead, where the runbook's drill behaviour says `sandbox`."""


C = TypeVar("C", bound=Connection)


class ActionParams(BaseModel):
    """Base of action parameter models: unknown parameters are errors, values are immutable, and
    a number rendered by a template (``{{ inputs.count + 1 }}``) is accepted where text is wanted."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class ActionFailed(Exception):
    """An action could not do its work; says whether trying again may help and what a person
    must do now. Other exceptions from an action are treated as retryable."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        todo: str | None = None,
        changed: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.todo = todo
        self.changed = changed
        """False when the provider certainly changed nothing (a refusal); None when unknown."""
        self.retry_after = retry_after
        """Seconds the provider asked us to wait before trying again (HTTP Retry-After)."""


class ProductionInDrill(ActionFailed):
    """A drill reached for a connection marked `production: true` that has no sandbox."""

    def __init__(self, connection: str) -> None:
        super().__init__(
            f"connection {connection!r} is production: drills never call it",
            changed=False,
            todo=f"give {connection!r} a `sandbox:` connection for drills, or substitute the action",
        )
        self.connection = connection


class NoSandbox(ProductionInDrill):
    """A drill step whose behaviour is `sandbox` reached for a connection that names no sandbox."""

    def __init__(self, connection: str) -> None:
        ActionFailed.__init__(
            self,
            f"connection {connection!r} names no `sandbox:` and the drill behaviour is sandbox",
            changed=False,
            todo=f"give {connection!r} a `sandbox:` connection in connections.yaml",
        )
        self.connection = connection


class CannotReconcile(Exception):
    """Raised by an action's `reconcile` when the connection in use gives it no way to check the
    provider (a kill switch without a status endpoint): a person must then settle the call, as
    for an action without `reconcile`. The message says why."""


class Risk(StrEnum):
    """How much an action can change the world, from reading it to destroying part of it."""

    READ = "read"
    NOTIFY = "notify"
    CHANGE = "change"
    DESTRUCTIVE = "destructive"


class DrillBehaviour(StrEnum):
    """What an action does when its run is a drill."""

    CALL = "call"  # run it as in a live run (reads; messages get a [DRILL] prefix)
    RECORD = "record"  # record exactly what would have been called, call nothing
    DRY_RUN = "dry_run"  # ask the provider to validate without changing anything
    SANDBOX = "sandbox"  # call the connection's `sandbox:` instead; record if it names none
    SKIP = "skip"  # do nothing, record that it was skipped


class DrillConnections(StrEnum):
    """Which connection a drill calls where a connection names a `sandbox:` (never a production one)."""

    SANDBOX = "sandbox"  # its sandbox (for messages: the drill channel)
    REQUIRED = "required"  # its sandbox, and none named is a refusal (drill behaviour `sandbox`)
    REAL = "real"  # the connection itself unless production (the runbook's `drill.real_channels`)


class Mode(StrEnum):
    """Every run is live or a drill."""

    LIVE = "live"
    DRILL = "drill"


DRILL_PREFIX = "[DRILL] "

_DEFAULT_DRILL = {
    Risk.READ: DrillBehaviour.CALL,
    Risk.NOTIFY: DrillBehaviour.CALL,
    Risk.CHANGE: DrillBehaviour.RECORD,
    Risk.DESTRUCTIVE: DrillBehaviour.RECORD,
}


async def _publish_nowhere(key: str, markdown: str) -> None:
    """Where notes go when a run has nowhere to publish them."""


async def _call_directly(spec: ActionSpec, params: BaseModel, context: ActionContext) -> Any:
    """How an action calls another where the run keeps no side-effect ledger."""
    result = await spec.run(params, context)
    return result.model_dump(mode="json", by_alias=True) if isinstance(result, BaseModel) else result


class VoiceDesk(Protocol):
    """Siaga's store of voices as the actions that answer them see it (`siaga.voices.desk`): the
    flow layer hands one to each step (`ActionContext.voices`); the actions never reach the store
    themselves."""

    def draft(self, context: ActionContext, platforms: Iterable[str], limit: int) -> dict[str, Any]:
        """Take the run's voices in, draft their replies, and return the groups to approve (the
        voices on `platforms`, at most `limit` of them)."""
        ...

    def admit(self, reply: Mapping[str, Any], context: ActionContext) -> dict[str, str]:
        """Of an approved reply's voices, those whose reply may go out now, checked against the
        store (the text is Siaga's draft, the voice still open and in that draft): ``{voice: ""}``,
        or why not; raise ActionFailed when the text is not what Siaga drafted."""
        ...

    def answered(self, voice_id: str, context: ActionContext, *, text: str, url: str | None) -> None:
        """Record the voice answered now with `text` (in a drill: recorded, not posted)."""
        ...

    def failed(self, voice_id: str, context: ActionContext, reason: str) -> None:
        """Record why the voice's reply could not be posted: it stays open."""
        ...


@dataclass(frozen=True)
class ActionContext:
    """What an action knows of the run it serves; built by the flow layer for each step."""

    runbook_id: str
    step_id: str
    run_id: str
    mode: Mode
    home: Path
    publish: Callable[[str, str], Awaitable[None]] = field(default=_publish_nowhere)
    """Publish a Markdown note of the run (a Prefect artifact in a flow run): ``(key, markdown)``."""
    incident_id: str | None = None
    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The connections configured next to the runbooks, by name (secrets still as references)."""
    secret_source: SecretSource | None = None
    """Where secrets are looked up when the environment has none (Prefect Secret blocks)."""
    call: Callable[[ActionSpec, BaseModel, ActionContext], Awaitable[Any]] = field(default=_call_directly)
    """How an action made of others (`notify.fanout`) calls each part, ``(spec, params, context)``:
    through the side-effect ledger in a flow run, so a retry repeats only the parts that failed."""
    library: Path | None = None
    """The runbook folder the run's runbook came from (message templates are in its templates/)."""
    templates: Mapping[str, str] = field(default_factory=dict)
    """The message templates of the revision the run executes, by file name (others: from `library`)."""
    comms: Mapping[str, Any] = field(default_factory=dict)
    """The runbook's `comms:` settings (languages, timezone), for the comms actions."""
    drill_connections: DrillConnections = DrillConnections.SANDBOX
    """In a drill, whether a connection's `sandbox:` is used (see `connection`)."""
    voices: VoiceDesk | None = None
    """The voices of the run's incident (`voices.draft`, `voices.answer`); None outside a flow run."""

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and restarts of this step: (incident or run, step)."""
        return f"{self.incident_id or self.run_id}:{self.step_id}"

    def secret(self, reference: str) -> str:
        """The value of ``secret://NAME``; raise ActionFailed saying where to set it."""
        try:
            return resolve_secret(reference, fallback=self.secret_source)
        except SecretNotFound as exc:
            raise ActionFailed(str(exc), todo="set the secret and run the step again", changed=False) from None

    def connection(self, model: type[C], name: str | None = None) -> C:
        """The connection `name`, or the only (or `default: true`) one of the model's type,
        validated by the provider's model; raise ActionFailed saying what to configure."""
        kind = model.model_fields["type"].default
        if name is not None:
            raw = self.connections.get(name)
            if raw is None:
                raise ActionFailed(
                    f"no connection named {name!r}", changed=False,
                    todo=f"add `{name}: {{type: {kind}, ...}}` under `connections:` in connections.yaml",
                )
        else:
            candidates = {n: c for n, c in self.connections.items() if c.get("type") == kind}
            defaults = [n for n, c in candidates.items() if c.get("default")]
            if len(candidates) == 1:
                name = next(iter(candidates))
            elif len(defaults) == 1:
                name = defaults[0]
            else:
                what = "no" if not candidates else "several"
                raise ActionFailed(
                    f"{what} `type: {kind}` connections configured", changed=False,
                    todo="name one with the step's `connection:` parameter, or configure exactly one "
                    "(or mark one `default: true`) in connections.yaml",
                )
            raw = candidates[name]
        if self.mode is Mode.DRILL:
            name, raw = self._drill_connection(name, raw)
        try:
            return model.model_validate({k: v for k, v in raw.items() if k != "default"})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ActionFailed(f"connection {name!r} is not valid: {problems}", changed=False,
                               todo="fix it in connections.yaml") from None

    def _drill_connection(self, name: str, raw: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
        """The connection a drill calls instead of `name`: its `sandbox:` where it names one
        (unless the runbook wants real channels and `name` is not production), never a
        production one."""
        sandbox = raw.get("sandbox")
        wanted = raw.get("production") or self.drill_connections is not DrillConnections.REAL
        if not sandbox or not wanted:
            if self.drill_connections is DrillConnections.REQUIRED:
                raise NoSandbox(name)
            if raw.get("production"):
                raise ProductionInDrill(name)
            return name, raw
        found = self.connections.get(sandbox)
        if found is None or found.get("production"):
            raise ProductionInDrill(sandbox)
        return sandbox, found


ActionFunction = Callable[[Any, ActionContext], Awaitable[Any]]


@dataclass(frozen=True)
class ActionSpec:
    """One registered action."""

    name: str
    params: type[BaseModel]
    run: ActionFunction
    risk: Risk
    summary: str
    undo: str | None = None
    drill: DrillBehaviour | None = None
    message_fields: tuple[str, ...] = ()
    """The parameters holding outgoing text (message, subject): prefixed ``[DRILL]`` in drills."""
    reconcile: ActionFunction | None = None
    """Checks the provider for this call's effect: its result if already in place, else None;
    raises CannotReconcile when the connection offers no way to check. Used when an earlier
    attempt may have acted but recorded no outcome."""
    provider_idempotent: bool = False
    """The provider deduplicates by our idempotency key, so calling again is always safe."""
    ledger_per_part: bool = False
    """Only its calls of other actions (`ActionContext.call`) are side-effect ledger entries, each
    once; the action itself runs again on every attempt and run (`voices.answer`: what it must
    post changes from round to round, what it posted never does)."""
    preview: ActionFunction | None = None
    """Reads what this call would change (its blast radius) without changing it: shown to the
    people at the step's approval gate."""

    @property
    def drill_behaviour(self) -> DrillBehaviour:
        return self.drill or _DEFAULT_DRILL[self.risk]

    def describe(self) -> dict[str, Any]:
        """The action as `siaga actions --json` shows it."""
        return {
            "name": self.name,
            "summary": self.summary,
            "risk": str(self.risk),
            "undo": self.undo,
            "drill": str(self.drill_behaviour),
            "parameters": self.params.model_json_schema(),
        }


@dataclass(frozen=True)
class ActionRegistry:
    """Actions by name."""

    actions: Mapping[str, ActionSpec] = field(default_factory=dict)

    @classmethod
    def of(cls, specs: Iterable[ActionSpec]) -> ActionRegistry:
        table: dict[str, ActionSpec] = {}
        for spec in specs:
            if spec.name in table:
                raise ValueError(f"action {spec.name!r} is registered twice")
            table[spec.name] = spec
        return cls(table)

    def __contains__(self, name: object) -> bool:
        return name in self.actions

    def __getitem__(self, name: str) -> ActionSpec:
        return self.actions[name]

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(sorted(self.actions.values(), key=lambda spec: spec.name))

    def names(self) -> list[str]:
        return sorted(self.actions)

    def matching(self, pattern: str) -> list[str]:
        """Action names a drill substitution pattern such as ``aws.*`` covers."""
        return [name for name in self.names() if fnmatch.fnmatchcase(name, pattern)]
