"""The runbook language as pydantic models: the shape of a runbook, checked field by field.

Rules that span fields (step references, roles, actions, templates) live in `checks`.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
)

from ..actions import DrillBehaviour
from .durations import Duration

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=80)]
"""Lowercase letters, digits, ``-`` and ``_``: ids of runbooks, steps, roles and people."""

Identifier = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=64)]
"""A name usable in templates as ``inputs.<name>``."""

RESERVED_INPUTS = frozenset({"mode", "alert", "incident", "requested_by", "phase"})

ROSTER_ROLE = "roster"
"""``roles: {finance: roster}``: the role is held by everyone the roster lets hold it."""


def _not_reserved(name: str) -> str:
    if name in RESERVED_INPUTS:
        raise ValueError(f"the input name `{name}` is reserved by Siaga")
    return name


InputName = Annotated[Identifier, AfterValidator(_not_reserved)]
"""An input's name: an identifier that is not one of Siaga's own template names."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Phase = Literal["respond", "resolve"]
"""A runbook run does one phase: ``respond`` runs `steps` (when the incident opens), ``resolve``
runs `on_resolve` (when it resolves). A drill rehearses both, one after the other."""
RESPOND: Phase = "respond"
RESOLVE: Phase = "resolve"
PHASE_LISTS: dict[Phase, str] = {"respond": "steps", "resolve": "on_resolve"}
"""Each phase's list in the runbook (the first part of a diagnostic's path)."""


class Severity(StrEnum):
    SEV1 = "sev1"
    SEV2 = "sev2"
    SEV3 = "sev3"
    SEV4 = "sev4"


class InputType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"

    def python_type(self) -> type:
        return {"string": str, "integer": int, "number": float, "boolean": bool}[self.value]


Scalar = bool | int | float | str


class Input(_Model):
    """A value the run is started with; required unless it has a default."""

    type: InputType = InputType.STRING
    description: str = ""
    enum: list[Scalar] | None = Field(default=None, min_length=1)
    default: Scalar | None = None  # after `type` and `enum`, which its validator reads

    @property
    def required(self) -> bool:
        return self.default is None

    def coerce(self, value: Any) -> Scalar:
        """Coerce a value (often text from a command line or an alert) to this input's type."""
        return self._coerce(self.type, self.enum, value)

    @staticmethod
    def _coerce(kind: InputType, enum: list[Scalar] | None, value: Any) -> Scalar:
        if kind is InputType.BOOLEAN:
            if isinstance(value, bool):
                result: Scalar = value
            elif str(value).strip().lower() in {"true", "yes", "1", "on"}:
                result = True
            elif str(value).strip().lower() in {"false", "no", "0", "off"}:
                result = False
            else:
                raise ValueError(f"expected a boolean (true or false), got {value!r}")
        elif kind is InputType.INTEGER:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"expected an integer, got {value!r}")
            try:
                result = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"expected an integer, got {value!r}") from None
        elif kind is InputType.NUMBER:
            if isinstance(value, bool):
                raise ValueError(f"expected a number, got {value!r}")
            try:
                result = float(value)
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"expected a number, got {value!r}") from None
            if not math.isfinite(result):  # "NaN", "inf", "1e999": no JSON, audit record or run takes them
                raise ValueError(f"expected a finite number, got {value!r}")
        else:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError(f"expected a string, got {value!r}")
            result = str(value)
        if enum is not None and result not in enum:
            choices = ", ".join(map(str, enum))
            raise ValueError(f"{result!r} is not one of: {choices}")
        return result

    @field_validator("enum")
    @classmethod
    def _choices_fit(cls, enum: list[Scalar] | None, info: ValidationInfo) -> list[Scalar] | None:
        if enum is not None and "type" in info.data:
            for choice in enum:
                cls._coerce(info.data["type"], enum, choice)
        return enum

    @field_validator("default")
    @classmethod
    def _default_fits(cls, default: Scalar | None, info: ValidationInfo) -> Scalar | None:
        if default is not None and "type" in info.data:
            cls._coerce(info.data["type"], info.data.get("enum"), default)
        return default


Priority = Literal["P1", "P2", "P3", "P4", "P5"]
"""How urgent an incident is, P1 first: with severity, it ranks concurrent incidents."""


class Impact(_Model):
    """Business impact limits: they drive approval deadlines, escalation and comms deadlines,
    and (with `priority`) how an incident ranks among those open at the same time."""

    services: list[str] = Field(default_factory=list)
    priority: Priority | None = None
    """The priority of this runbook's incidents (an alert's `priority` label, P1 to P5, overrides
    it); incidents rank by severity, then priority, then age."""
    max_tolerable_downtime: Duration | None = None
    public_statement_within: Duration | None = None


Audience = Literal["customers", "employees", "media", "regulator", "partners"]
"""Whom a crisis communication is for: each has its own templates and channels."""

PUBLIC = "public"
"""The deadline of `impact.public_statement_within`: met by a statement to customers or media."""

def _language_code(code: str) -> str:
    if not re.fullmatch(r"[a-z]{2,3}", code):
        raise ValueError(f"expected a language code such as id or en, got {code!r}")
    return code


Language = Annotated[str, AfterValidator(_language_code), Field(json_schema_extra={"pattern": "^[a-z]{2,3}$"})]
"""An ISO 639 language code: ``id`` (Indonesian), ``en`` (English)."""


def _positive(value: timedelta) -> timedelta:
    if value.total_seconds() <= 0:
        raise ValueError("must be longer than 0s")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


SITREP_ROLES = ("liaison", "commander")
"""Who gets situation reports unless `comms.sitrep.to` says otherwise."""


class Sitrep(_Model):
    """Situation reports while an incident is open: conditions, actions and needs, every `every`
    (from the incident's opening) to the people of the roles in `to`, through their roster
    channels. Wider audiences get them only through an approved statement (`comms.publish`)."""

    every: PositiveDuration
    """How often, counted from the incident's opening (or the last report sent)."""
    to: list[Slug] = Field(default_factory=lambda: list(SITREP_ROLES), min_length=1)
    """The roles whose people get each report (default: liaison and commander)."""


class Comms(_Model):
    """Crisis communications: the languages statements are written in and the deadlines by which
    each audience must have had one (counted from the incident's opening)."""

    languages: list[Language] = Field(default_factory=lambda: ["en"], min_length=1)
    """Every draft is written in each of these, in this order (templates/<audience>.<lang>.md.j2)."""
    timezone: str = "UTC"
    """The time zone of the times a statement gives (its next update): an IANA name."""
    deadlines: dict[Audience, PositiveDuration] = Field(default_factory=dict)
    """Per audience, how soon after the incident opens it must have had a published statement;
    reminders go to the liaison at half and three quarters of it, a miss up the chain of command."""
    sitrep: Sitrep | None = None
    """Situation reports on a cadence while the incident is open (`siaga sitrep` sends one on demand)."""

    @field_validator("languages")
    @classmethod
    def _distinct_languages(cls, languages: list[str]) -> list[str]:
        if len(set(languages)) != len(languages):
            raise ValueError("each language once")
        return languages


PLATFORMS = (
    "x", "instagram", "facebook", "tiktok", "youtube", "threads", "linkedin", "whatsapp", "website",
    "app-store", "play-store",
)
"""The platforms a mention may come from unless `voices.platforms` says otherwise."""


def _names(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


FieldNames = Annotated[list[str], BeforeValidator(_names), Field(min_length=1)]
"""Label (or annotation) names to look for, the first one present wins; one name may be written as text."""


class MentionSource(_Model):
    """Alerts that are mentions: those from `source` whose labels equal every `match` value."""

    source: Slug
    match: dict[str, str] = Field(default_factory=dict)


class MentionFields(_Model):
    """Where each fact of a mention is in its alert: a label, else an annotation, of these names."""

    id: FieldNames = Field(default_factory=lambda: ["mention_id", "post"])
    """The mention's own id on its platform (with the platform, what makes duplicates one voice)."""
    platform: FieldNames = Field(default_factory=lambda: ["platform"])
    thread: FieldNames = Field(default_factory=lambda: ["thread_id", "thread"])
    author: FieldNames = Field(default_factory=lambda: ["author"])
    author_tier: FieldNames = Field(default_factory=lambda: ["author_tier"])
    text: FieldNames = Field(default_factory=lambda: ["text"])
    url: FieldNames = Field(default_factory=lambda: ["url"])
    sentiment: FieldNames = Field(default_factory=lambda: ["sentiment"])
    language: FieldNames = Field(default_factory=lambda: ["language", "lang"])
    topic: FieldNames = Field(default_factory=lambda: ["topic"])
    """The kind of complaint (which reply template answers it); else the incident's `topic` input."""


DEFAULT_REPLY = "reply"
"""The reply template of a topic `voices.replies` does not name (and of none named `default`)."""


class Voices(_Model):
    """Every mention that reaches an incident of this runbook is a voice to answer by a deadline:
    `respond_within` from its arrival, or the shortest of the overrides that apply to it."""

    respond_within: PositiveDuration
    by_author_tier: dict[str, PositiveDuration] = Field(default_factory=dict)
    """A shorter (or longer) time for authors of a tier: ``{influencer: 2h, media: 1h}``."""
    by_sentiment: dict[str, PositiveDuration] = Field(default_factory=dict)
    """Per sentiment: ``{negative: 12h}``. Of every rule that applies, the shortest wins."""
    remind_before: PositiveDuration | None = None
    """The owners are reminded this long before a voice's deadline (default: a quarter of its time);
    a missed one is told up the chain of command, as statement deadlines are."""
    owners: list[Slug] = Field(default_factory=list)
    """The roles that answer voices and are reminded (default: the liaison, else the first level
    of the chain of command)."""
    mentions: list[MentionSource] = Field(
        default_factory=lambda: [MentionSource(source="social"),
                                 MentionSource(source="generic", match={"event_type": "mention"})],
        min_length=1,
    )
    """Which alerts linked to the incident are mentions (others, such as a volume spike, are not)."""
    fields: MentionFields = Field(default_factory=MentionFields)
    platforms: list[Slug] = Field(default_factory=lambda: list(PLATFORMS), min_length=1)
    """The platforms mentions may come from: a mention from any other is refused, with the reason."""
    late_within: PositiveDuration = timedelta(days=3)
    """A mention arriving this long after its incident resolved is still a voice of it."""
    replies: dict[str, Slug] = Field(default_factory=dict)
    """The reply template per topic (``templates/<name>.<language>.md.j2``); the key `default`
    names the one for other topics (default: `reply`)."""
    facts: dict[Identifier, str | dict[Language, str]] = Field(default_factory=dict)
    """What replies may say (`facts.<name>` in a template): a text, or one per language; ``{{ }}``
    reads the incident's `inputs`."""

    def reply_template(self, topic: str) -> str:
        """The template name that answers voices of `topic`."""
        return self.replies.get(topic) or self.replies.get("default") or DEFAULT_REPLY

    def template_names(self) -> list[str]:
        """Every reply template the runbook may use, each once."""
        names = [self.reply_template(topic) for topic in self.replies if topic != "default"]
        return list(dict.fromkeys([*names, self.reply_template("")]))


class Threshold(_Model):
    """Open an incident once `count` matching alerts arrive within `within`."""

    count: int = Field(ge=1)
    within: Duration
    match: dict[str, str] = Field(default_factory=dict)


HEARTBEAT_SOURCE = "heartbeat"
"""The source of heartbeats posted to the receiver's ``/heartbeats/{name}``, and of the alert a
quiet heartbeat raises."""
HEARTBEAT_NAME = r"^[a-z0-9][a-z0-9_.-]{0,79}$"
"""A heartbeat's name, as posted to ``/heartbeats/{name}`` (a `source: heartbeat` trigger's
``match: {name: ...}``)."""


class Heartbeat(_Model):
    """A signal expected at least every `every` (a dead man's switch): its alerts are signs of
    life, and the trigger opens an incident when they stop."""

    every: Duration = Field(
        description="The longest quiet allowed: no matching alert (or heartbeat post) for this long "
        "opens one incident per group; the signal's return resolves it.",
    )

    @field_validator("every")
    @classmethod
    def _positive_every(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("a heartbeat interval must be at least 1s")
        return value


class Trigger(_Model):
    """Which alerts start this runbook, how they group into incidents, and the inputs they give.

    With `heartbeat`, the matching alerts are signs of life instead: the trigger opens an incident
    when none came for `heartbeat.every` (per group), and resolves it when one comes again."""

    source: Slug
    match: dict[str, str] = Field(default_factory=dict)
    group_by: list[str] = Field(default_factory=list)
    inputs: dict[str, str] = Field(default_factory=dict)
    threshold: Threshold | None = None
    heartbeat: Heartbeat | None = None


class MaintenanceWindow(_Model):
    """A recurring maintenance window: from each time `schedule` fires, for `for`, this runbook's
    alerts (those carrying every `match` label) open no incident; they are recorded as
    suppressed, and the ones still firing when the window ends open their incidents then."""

    schedule: str = Field(description="When each window begins: a cron expression (five fields).")
    for_: PositiveDuration = Field(alias="for", description="How long each window lasts.")
    timezone: str = "UTC"
    match: dict[str, str] = Field(default_factory=dict)
    reason: str = Field(default="", description="Said in `siaga maintenance list` and the audit trail.")


class DrillWindow(_Model):
    """A maintenance window a drill opens when it starts, so that the alerts the drill sets off
    (those carrying every `match` label) never page the team: it covers this runbook for `for`."""

    for_: PositiveDuration = Field(alias="for", description="How long from the drill's start: the drill "
                                   "and the time its alerts take to resolve.")
    match: dict[str, str] = Field(default_factory=dict)


class Drill(_Model):
    """How this runbook is rehearsed: when, and what its side effects turn into."""

    schedule: str | None = None
    timezone: str = "UTC"
    inputs: dict[str, Scalar] = Field(default_factory=dict)
    """Input values for drills (scheduled or `siaga drill`), where the runbook needs some."""
    alert: dict[str, Any] | None = None
    """A sample alert for drills, so steps that read `alert.labels...` rehearse too."""
    substitute: dict[str, DrillBehaviour] = Field(default_factory=dict)
    real_channels: bool = False
    """Send drill messages to the real channels, marked ``[DRILL]``, rather than to the drill
    channels (each connection's `sandbox:`). Production connections are never called."""
    maintenance: DrillWindow | None = None
    """A maintenance window the drill opens as it starts (``siaga maintenance list`` shows it)."""


class Approval(_Model):
    """People who must approve a step before it runs."""

    from_: list[Slug] = Field(alias="from", min_length=1)
    quorum: int = Field(default=1, ge=1)
    distinct_roles: bool = False
    timeout: Duration | None = None
    safe_by_default: bool = False  # before `on_timeout`, whose validator reads it
    on_timeout: Literal["reject", "approve", "fail"] = "reject"
    reject: Literal["any", "majority"] = "any"
    timeout_approves_destructive: bool = Field(
        default=False,
        description="With on_timeout: approve on a step whose action is destructive (payments.freeze, "
        "aws.route53.failover...), true says that the clock may approve it when nobody answers; "
        "without it such a runbook is refused.",
    )

    @field_validator("on_timeout")
    @classmethod
    def _approve_on_timeout_is_explicit(cls, on_timeout: str, info: ValidationInfo) -> str:
        if on_timeout == "approve" and info.data.get("safe_by_default") is False:
            raise ValueError(
                "on_timeout: approve needs safe_by_default: true on the same approval, "
                "so that approving without a person is a stated choice"
            )
        return on_timeout


class Undo(_Model):
    """The compensating action of a step; without `with`, it gets the step's own parameters."""

    action: str
    with_: dict[str, Any] | None = Field(default=None, alias="with")


class Step(_Model):
    """One thing the runbook does."""

    id: Slug
    action: str
    description: str = ""
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    after: list[str] | None = None
    when: str | None = None
    retries: int = Field(default=0, ge=0, le=20)
    retry_delay: Duration = timedelta(seconds=1)
    timeout: Duration | None = None
    approval: Approval | None = None
    undo: Undo | None = None
    continue_on_error: bool = False
    releases: Slug | None = Field(
        default=None,
        description="An on_resolve step that releases what a step of the response did (payouts it froze): "
        "it is asked for and run only if that step was done; otherwise it is skipped, and said so.",
    )

    @field_validator("undo", mode="before")
    @classmethod
    def _undo_by_name(cls, value: Any) -> Any:
        return {"action": value} if isinstance(value, str) else value

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value.total_seconds() <= 0:
            raise ValueError("a timeout must be longer than 0s")
        return value


class Runbook(_Model):
    """A crisis plan: who is involved, what is at stake, what starts it and the steps it takes."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        json_schema_extra={"title": "Siaga runbook"},
    )

    id: Slug = Field(alias="runbook")
    title: str = Field(min_length=1)
    description: str = ""
    severity: Severity
    impact: Impact = Field(default_factory=Impact)
    roles: dict[Slug, list[Slug] | Literal["roster"]] = Field(default_factory=dict)
    chain_of_command: list[Slug] = Field(default_factory=list)
    inputs: dict[InputName, Input] = Field(default_factory=dict)
    triggers: list[Trigger] = Field(default_factory=list)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    """Recurring maintenance windows of this runbook (``siaga maintenance start`` opens one by hand)."""
    drill: Drill = Field(default_factory=Drill)
    comms: Comms = Field(default_factory=Comms)
    voices: Voices | None = None
    """Answer every voice: each mention reaching an incident, with a response deadline."""
    steps: list[Step] = Field(min_length=1)
    on_resolve: list[Step] = Field(default_factory=list)
    """Steps to run once the incident resolves (every alert of it resolved), in a run of their
    own: the same step language as `steps`, with ids unique across both lists."""

    _revision: Any = PrivateAttr(default=None)
    """The source it was read from (`siaga.runbook.revision`): where it came from, not what it says."""

    def __eq__(self, other: object) -> bool:
        """Runbooks saying the same are equal, whatever text (comments, layout) they were read from."""
        if not isinstance(other, Runbook):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def step(self, step_id: str) -> Step:
        """The step `step_id` of either phase."""
        return next(step for step in (*self.steps, *self.on_resolve) if step.id == step_id)

    def phase_steps(self, phase: Phase) -> list[Step]:
        """The steps of `phase`: ``respond`` (`steps`) or ``resolve`` (`on_resolve`)."""
        return self.steps if phase == RESPOND else self.on_resolve
