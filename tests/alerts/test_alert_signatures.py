"""Alert webhook authenticity: each source's scheme accepts what its sender signs and refuses
tampered, unsigned, wrongly keyed, stale, replayed and disallowed deliveries with the right error.

The SNS signing key and certificate are generated here, per test session; no key is committed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from integrations.webhook import signature as siaga_signature
from siaga.alerts import (
    AuthError,
    BadPayload,
    Forbidden,
    MemoryReplayGuard,
    SourceAuth,
    Unauthenticated,
    replay_key,
    verify,
)
from siaga.alerts.signatures import sns_string_to_sign

FIXTURES = Path(__file__).parent.parent / "fixtures" / "alerts"
NOW = datetime(2026, 11, 24, 3, 20, 30, tzinfo=UTC)
SECRET = "test-only-secret-9f2c"
OTHER = "test-only-other-secret"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def stamp(moment: datetime = NOW) -> str:
    return str(int(moment.timestamp()))


# --- alertmanager ----------------------------------------------------------------------------

AM = SourceAuth(bearer_token="am-token-123")


def test_alertmanager_bearer_accepted() -> None:
    verify("alertmanager", {"Authorization": "Bearer am-token-123"}, b"{}", AM, NOW)
    verify("alertmanager", {"authorization": "bearer am-token-123"}, b"{}", AM, NOW)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing Authorization"),
        ({"Authorization": "Basic YTpi"}, "not a bearer token"),
        ({"Authorization": "Bearer "}, "not a bearer token"),
        ({"Authorization": "Bearer am-token-124"}, "wrong bearer token"),
    ],
)
def test_alertmanager_refused(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason) as caught:
        verify("alertmanager", headers, b"{}", AM, NOW)
    assert caught.value.status_code == 401


def test_alertmanager_without_a_configured_token_accepts_nothing() -> None:
    with pytest.raises(Unauthenticated, match="no bearer token is configured"):
        verify("alertmanager", {"Authorization": "Bearer x"}, b"{}", SourceAuth(), NOW)


def test_alertmanager_repeats_are_not_replays() -> None:
    guard = MemoryReplayGuard()
    for _ in range(3):  # the same firing payload every repeat_interval
        verify(
            "alertmanager",
            {"Authorization": "Bearer am-token-123"},
            b"{}",
            AM,
            NOW,
            replay_guard=guard,
        )
    assert len(guard) == 0


# --- generic ---------------------------------------------------------------------------------

GENERIC = SourceAuth(hmac_secrets=[SECRET])
BODY = fixture_bytes("generic_social")


def generic_headers(body: bytes = BODY, secret: str = SECRET, at: datetime = NOW) -> dict[str, str]:
    ts = stamp(at)
    return {"X-Siaga-Timestamp": ts, "X-Siaga-Signature": siaga_signature(secret, ts, body)}


def test_generic_accepts_what_http_request_sends() -> None:
    verify("social", generic_headers(), BODY, GENERIC, NOW)


def test_generic_accepts_any_configured_secret() -> None:
    rotating = SourceAuth(hmac_secrets=[OTHER, SECRET])
    verify("social", generic_headers(), BODY, rotating, NOW)


def test_generic_custom_header_names() -> None:
    config = SourceAuth(hmac_secrets=[SECRET], signature_header="X-Sig", timestamp_header="X-Ts")
    ts = stamp()
    headers = {"x-ts": ts, "x-sig": siaga_signature(SECRET, ts, BODY)}
    verify("social", headers, BODY, config, NOW)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: ({}, BODY), "missing X-Siaga-Signature"),
        (lambda: (generic_headers(), BODY.replace(b"negative", b"positive")), "does not match"),
        (lambda: (generic_headers(secret=OTHER), BODY), "does not match"),
        (lambda: (generic_headers(at=NOW - timedelta(minutes=6)), BODY), "outside the 300s window"),
        (lambda: (generic_headers(at=NOW + timedelta(minutes=6)), BODY), "outside the 300s window"),
        (lambda: ({**generic_headers(), "X-Siaga-Timestamp": "soon"}, BODY), "not Unix seconds"),
        (
            lambda: ({"X-Siaga-Signature": generic_headers()["X-Siaga-Signature"]}, BODY),
            "missing X-Siaga-Timestamp",
        ),
        (lambda: ({**generic_headers(), "X-Siaga-Signature": "md5=abc"}, BODY), "sha256=<hex>"),
    ],
)
def test_generic_refused(make: Callable[[], tuple[dict[str, str], bytes]], reason: str) -> None:
    headers, body = make()
    with pytest.raises(Unauthenticated, match=reason):
        verify("social", headers, body, GENERIC, NOW)


def test_generic_timestamp_cannot_be_moved_without_the_secret() -> None:
    headers = generic_headers(at=NOW - timedelta(minutes=10))
    headers["X-Siaga-Timestamp"] = stamp()  # fresh timestamp, old signature
    with pytest.raises(Unauthenticated, match="does not match"):
        verify("social", headers, BODY, GENERIC, NOW)


def test_generic_replay_refused_then_released() -> None:
    guard = MemoryReplayGuard()
    headers = generic_headers()
    verify("social", headers, BODY, GENERIC, NOW, replay_guard=guard)
    with pytest.raises(Forbidden, match="already received") as caught:
        verify("social", headers, BODY, GENERIC, NOW + timedelta(seconds=5), replay_guard=guard)
    assert caught.value.status_code == 403
    # The receiver could not take the first one in: it releases the key and the retry passes.
    guard.release(replay_key("social", headers, BODY, GENERIC))
    verify("social", headers, BODY, GENERIC, NOW + timedelta(seconds=6), replay_guard=guard)


def test_a_refused_delivery_is_not_remembered() -> None:
    guard = MemoryReplayGuard()
    with pytest.raises(Unauthenticated):
        verify("social", generic_headers(secret=OTHER), BODY, GENERIC, NOW, replay_guard=guard)
    assert len(guard) == 0


def test_memory_replay_guard_forgets_after_expiry_and_stays_bounded() -> None:
    guard = MemoryReplayGuard(max_entries=3)
    assert guard.claim("a", NOW, NOW + timedelta(minutes=1))
    assert not guard.claim("a", NOW + timedelta(seconds=59), NOW + timedelta(minutes=2))
    assert guard.claim("a", NOW + timedelta(minutes=1, seconds=1), NOW + timedelta(minutes=3))
    for key in "bcde":
        assert guard.claim(key, NOW, NOW + timedelta(hours=1))
    assert len(guard) <= 3


def test_generic_without_secrets_accepts_nothing() -> None:
    with pytest.raises(Unauthenticated, match="no HMAC secret is configured"):
        verify("social", generic_headers(), BODY, SourceAuth(), NOW)


# --- grafana ---------------------------------------------------------------------------------

GRAFANA_BODY = fixture_bytes("grafana_firing")


def test_grafana_signature_over_body_as_grafana_sends_it() -> None:
    headers = {"X-Grafana-Alerting-Signature": hex_hmac(SECRET, GRAFANA_BODY)}
    verify("grafana", headers, GRAFANA_BODY, SourceAuth(hmac_secrets=[SECRET]), NOW)


def test_grafana_signature_with_timestamp() -> None:
    config = SourceAuth(
        hmac_secrets=[SECRET], timestamp_header="X-Grafana-Alerting-Signature-Timestamp"
    )
    ts = stamp()
    headers = {
        "X-Grafana-Alerting-Signature-Timestamp": ts,
        "X-Grafana-Alerting-Signature": hex_hmac(SECRET, ts.encode() + b":" + GRAFANA_BODY),
    }
    guard = MemoryReplayGuard()
    verify("grafana", headers, GRAFANA_BODY, config, NOW, replay_guard=guard)
    with pytest.raises(Forbidden, match="replay"):
        verify("grafana", headers, GRAFANA_BODY, config, NOW, replay_guard=guard)
    stale = NOW + timedelta(minutes=5, seconds=1)
    with pytest.raises(Unauthenticated, match="window"):
        verify("grafana", headers, GRAFANA_BODY, config, stale)
    # The body alone, without the timestamp, is not what a timestamped contact point signs.
    headers["X-Grafana-Alerting-Signature"] = hex_hmac(SECRET, GRAFANA_BODY)
    with pytest.raises(Unauthenticated, match="does not match"):
        verify("grafana", headers, GRAFANA_BODY, config, NOW)


def test_grafana_custom_signature_header() -> None:
    config = SourceAuth(hmac_secrets=[SECRET], signature_header="X-Grafana-Alert-Signature")
    headers = {"X-Grafana-Alert-Signature": hex_hmac(SECRET, GRAFANA_BODY)}
    verify("grafana", headers, GRAFANA_BODY, config, NOW)


def test_grafana_bearer() -> None:
    config = SourceAuth(bearer_token="graf-token")
    verify("grafana", {"Authorization": "Bearer graf-token"}, GRAFANA_BODY, config, NOW)
    with pytest.raises(Unauthenticated, match="wrong bearer token"):
        verify("grafana", {"Authorization": "Bearer nope"}, GRAFANA_BODY, config, NOW)


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({}, GRAFANA_BODY, "missing X-Grafana-Alerting-Signature"),
        (
            {"X-Grafana-Alerting-Signature": hex_hmac(SECRET, GRAFANA_BODY)},
            GRAFANA_BODY.replace(b"firing", b"resolved"),
            "does not match",
        ),
        (
            {"X-Grafana-Alerting-Signature": hex_hmac(OTHER, GRAFANA_BODY)},
            GRAFANA_BODY,
            "does not match",
        ),
        (
            {"X-Grafana-Alerting-Signature": "sha256=" + hex_hmac(SECRET, GRAFANA_BODY)},
            GRAFANA_BODY,
            "does not match",
        ),
    ],
)
def test_grafana_refused(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        verify("grafana", headers, body, SourceAuth(hmac_secrets=[SECRET]), NOW)


def test_grafana_bad_signature_does_not_fall_back_to_bearer() -> None:
    config = SourceAuth(hmac_secrets=[SECRET], bearer_token="graf-token")
    headers = {
        "Authorization": "Bearer graf-token",
        "X-Grafana-Alerting-Signature": hex_hmac(OTHER, GRAFANA_BODY),
    }
    with pytest.raises(Unauthenticated, match="does not match"):
        verify("grafana", headers, GRAFANA_BODY, config, NOW)


# --- pagerduty -------------------------------------------------------------------------------

PD_BODY = fixture_bytes("pagerduty_triggered")
PD = SourceAuth(hmac_secrets=[SECRET])


def test_pagerduty_signature() -> None:
    verify(
        "pagerduty", {"X-PagerDuty-Signature": "v1=" + hex_hmac(SECRET, PD_BODY)}, PD_BODY, PD, NOW
    )


def test_pagerduty_rotation_several_signatures_and_secrets() -> None:
    header = f"v1={hex_hmac(OTHER, PD_BODY)},v1={hex_hmac(SECRET, PD_BODY)}"
    verify("pagerduty", {"X-PagerDuty-Signature": header}, PD_BODY, PD, NOW)
    both = SourceAuth(hmac_secrets=["yet-another", SECRET])
    verify(
        "pagerduty",
        {"x-pagerduty-signature": f"v1={hex_hmac(SECRET, PD_BODY)}"},
        PD_BODY,
        both,
        NOW,
    )


@pytest.mark.parametrize(
    ("header", "body", "reason"),
    [
        (None, PD_BODY, "missing X-PagerDuty-Signature"),
        ("v0=" + hex_hmac(SECRET, PD_BODY), PD_BODY, "no v1=<hex>"),
        ("v1=" + hex_hmac(OTHER, PD_BODY), PD_BODY, "does not match"),
        ("v1=" + hex_hmac(SECRET, PD_BODY), PD_BODY.replace(b"high", b"low"), "does not match"),
    ],
)
def test_pagerduty_refused(header: str | None, body: bytes, reason: str) -> None:
    headers = {} if header is None else {"X-PagerDuty-Signature": header}
    with pytest.raises(Unauthenticated, match=reason):
        verify("pagerduty", headers, body, PD, NOW)


def test_pagerduty_replay_refused() -> None:
    guard = MemoryReplayGuard()
    headers = {"X-PagerDuty-Signature": "v1=" + hex_hmac(SECRET, PD_BODY)}
    verify("pagerduty", headers, PD_BODY, PD, NOW, replay_guard=guard)
    with pytest.raises(Forbidden, match="replay"):
        verify("pagerduty", headers, PD_BODY, PD, NOW, replay_guard=guard)


# --- SNS (CloudWatch) ------------------------------------------------------------------------

CERT_URL = (
    "https://sns.ap-southeast-1.amazonaws.com/"
    "SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
)
TOPIC = "arn:aws:sns:ap-southeast-1:123456789012:siaga-alarms"


class SnsSigner:
    """A throwaway RSA key and self-signed certificate standing in for SNS's."""

    def __init__(self, *, not_after: datetime = NOW + timedelta(days=30)) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        self.pem = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(not_after)
            .sign(self.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        self.fetched: list[str] = []

    def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        return self.pem

    def sign(self, message: dict[str, Any], version: str = "1") -> bytes:
        message = {**message, "SignatureVersion": version}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        raw = self.key.sign(sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
        message["Signature"] = base64.b64encode(raw).decode()
        return json.dumps(message).encode()


@pytest.fixture(scope="module")
def signer() -> SnsSigner:
    return SnsSigner()


SNS = SourceAuth(allowed_topic_arns=[TOPIC])


def alarm() -> dict[str, Any]:
    return json.loads(fixture_bytes("cloudwatch_alarm"))


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_notification_accepted(signer: SnsSigner, version: str) -> None:
    body = signer.sign(alarm(), version)
    verify("cloudwatch", {}, body, SNS, NOW, signer.fetch)
    assert signer.fetched[-1] == CERT_URL


def test_sns_notification_without_subject(signer: SnsSigner) -> None:
    message = alarm()
    del message["Subject"]
    verify("cloudwatch", {}, signer.sign(message), SNS, NOW, signer.fetch)


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_sns_subscription_messages_accepted(signer: SnsSigner, kind: str) -> None:
    message = json.loads(fixture_bytes("sns_subscription_confirmation"))
    message["Type"] = kind
    when = datetime(2026, 11, 24, 3, 1, tzinfo=UTC)
    verify("cloudwatch", {}, signer.sign(message, "2"), SNS, when, signer.fetch)


def test_sns_subscription_fields_are_signed(signer: SnsSigner) -> None:
    message = json.loads(fixture_bytes("sns_subscription_confirmation"))
    body = json.loads(signer.sign(message))
    body["SubscribeURL"] = (
        "https://sns.ap-southeast-1.amazonaws.com/?Action=ConfirmSubscription&Token=evil"
    )
    with pytest.raises(Unauthenticated, match="does not match"):
        verify(
            "cloudwatch",
            {},
            json.dumps(body).encode(),
            SNS,
            datetime(2026, 11, 24, 3, 1, tzinfo=UTC),
            signer.fetch,
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Message", json.dumps({"AlarmName": "ledger-prod-cpu", "NewStateValue": "OK"})),
        ("Subject", "OK: all fine"),
        ("MessageId", "another-id"),
        ("Timestamp", "2026-11-24T03:20:12.000Z"),
    ],
)
def test_sns_tampered_refused(signer: SnsSigner, field: str, value: str) -> None:
    body = json.loads(signer.sign(alarm()))
    body[field] = value
    with pytest.raises(Unauthenticated, match="does not match"):
        verify("cloudwatch", {}, json.dumps(body).encode(), SNS, NOW, signer.fetch)


def test_sns_signed_by_another_key_refused(signer: SnsSigner) -> None:
    impostor = SnsSigner()
    with pytest.raises(Unauthenticated, match="does not match"):
        verify("cloudwatch", {}, impostor.sign(alarm()), SNS, NOW, signer.fetch)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"Signature": ""}, "not signed"),
        ({"Signature": "%%%not base64"}, "not base64"),
        ({"SignatureVersion": "3"}, "unsupported SNS SignatureVersion"),
        ({"SigningCertURL": None}, "no SigningCertURL"),
    ],
)
def test_sns_unsigned_refused(signer: SnsSigner, change: dict[str, Any], reason: str) -> None:
    body = {**json.loads(signer.sign(alarm())), **change}
    with pytest.raises(Unauthenticated, match=reason):
        verify("cloudwatch", {}, json.dumps(body).encode(), SNS, NOW, signer.fetch)


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.ap-southeast-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/SimpleNotificationService-1.pem",
        "http://sns.ap-southeast-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.ap-southeast-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
        "https://user@sns.ap-southeast-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.ap-southeast-1.amazonaws.com/not-a-cert",
        "https://s3.amazonaws.com/SimpleNotificationService-1.pem",
    ],
)
def test_sns_cert_url_not_allowed(signer: SnsSigner, url: str) -> None:
    fetcher = SnsSigner()
    message = {**alarm(), "SigningCertURL": url}
    with pytest.raises(Forbidden, match="SigningCertURL"):
        verify("cloudwatch", {}, signer.sign(message), SNS, NOW, fetcher.fetch)
    assert fetcher.fetched == [], "a certificate is never fetched from a host that is not allowed"


def test_sns_cert_host_allowlist_is_configurable(signer: SnsSigner) -> None:
    url = "https://127.0.0.1/test-cert.pem"
    config = SourceAuth(allowed_topic_arns=[TOPIC], allowed_cert_hosts=["127.0.0.1"])
    body = signer.sign({**alarm(), "SigningCertURL": url})
    verify("cloudwatch", {}, body, config, NOW, signer.fetch)
    with pytest.raises(Forbidden, match="not an allowed SNS host"):
        verify("cloudwatch", {}, signer.sign(alarm()), config, NOW, signer.fetch)


def test_sns_wrong_topic_forbidden(signer: SnsSigner) -> None:
    body = signer.sign({**alarm(), "TopicArn": "arn:aws:sns:ap-southeast-1:999999999999:other"})
    with pytest.raises(Forbidden, match="TopicArn .* is not an allowed topic") as caught:
        verify("cloudwatch", {}, body, SNS, NOW, signer.fetch)
    assert caught.value.status_code == 403
    with pytest.raises(Forbidden, match="not an allowed topic"):
        verify("cloudwatch", {}, signer.sign(alarm()), SourceAuth(), NOW, signer.fetch)


def test_sns_stale_message_refused(signer: SnsSigner) -> None:
    body = signer.sign(alarm())
    with pytest.raises(Unauthenticated, match="outside the 300s window"):
        verify("cloudwatch", {}, body, SNS, NOW + timedelta(minutes=6), signer.fetch)
    roomy = SourceAuth(allowed_topic_arns=[TOPIC], window=timedelta(hours=1))
    verify("cloudwatch", {}, body, roomy, NOW + timedelta(minutes=6), signer.fetch)


def test_sns_replay_refused(signer: SnsSigner) -> None:
    guard = MemoryReplayGuard()
    body = signer.sign(alarm())
    verify("cloudwatch", {}, body, SNS, NOW, signer.fetch, replay_guard=guard)
    with pytest.raises(Forbidden, match="replay"):
        verify("cloudwatch", {}, body, SNS, NOW, signer.fetch, replay_guard=guard)


def test_sns_expired_certificate_refused() -> None:
    old = SnsSigner(not_after=NOW - timedelta(seconds=1))
    with pytest.raises(Unauthenticated, match="expired"):
        verify("cloudwatch", {}, old.sign(alarm()), SNS, NOW, old.fetch)


def test_sns_unfetchable_or_garbage_certificate_refused(signer: SnsSigner) -> None:
    def broken(url: str) -> bytes:
        raise OSError("connection refused")

    body = signer.sign(alarm())
    with pytest.raises(Unauthenticated, match="could not load the signing certificate"):
        verify("cloudwatch", {}, body, SNS, NOW, broken)
    with pytest.raises(Unauthenticated, match="could not load the signing certificate"):
        verify("cloudwatch", {}, body, SNS, NOW, lambda url: b"not a pem")
    with pytest.raises(Unauthenticated, match="no certificate fetcher"):
        verify("cloudwatch", {}, body, SNS, NOW)


def test_sns_body_not_json_refused() -> None:
    with pytest.raises(Unauthenticated, match="not an SNS message"):
        verify("cloudwatch", {}, b"<xml/>", SNS, NOW, lambda url: b"")


# --- property: anything a stranger sends is an AuthError, never another exception -----------

header_names = st.sampled_from(
    [
        "Authorization",
        "X-Siaga-Signature",
        "X-Siaga-Timestamp",
        "X-Grafana-Alerting-Signature",
        "X-PagerDuty-Signature",
        "X-Other",
    ]
)


@settings(max_examples=300)
@given(
    st.sampled_from(["alertmanager", "grafana", "pagerduty", "cloudwatch", "social"]),
    st.dictionaries(header_names, st.text(max_size=40), max_size=4),
    st.binary(max_size=200)
    | st.builds(
        lambda d: json.dumps(d).encode(),
        st.dictionaries(
            st.sampled_from(
                [
                    "Type",
                    "Signature",
                    "SignatureVersion",
                    "SigningCertURL",
                    "TopicArn",
                    "Message",
                    "MessageId",
                    "Timestamp",
                ]
            ),
            st.text(max_size=30) | st.sampled_from(["1", "2", "Notification", CERT_URL]),
        ),
    ),
)
def test_strangers_only_get_auth_errors(source: str, headers: dict[str, str], body: bytes) -> None:
    """Whatever a stranger sends is refused as unproven, or (an SNS message, which must be read to
    be proven) as malformed: a `BadPayload` (422), never anything else."""
    refusals: tuple[type[Exception], ...] = (AuthError, BadPayload) if source == "cloudwatch" else (AuthError,)
    config = SourceAuth(
        bearer_token="t0k3n",
        hmac_secrets=[SECRET],
        allowed_topic_arns=[TOPIC],
        timestamp_header="X-Siaga-Timestamp" if source == "grafana" else None,
    )
    with pytest.raises(refusals):
        verify(
            source,
            headers,
            body,
            config,
            NOW,
            lambda url: b"garbage",
            replay_guard=MemoryReplayGuard(),
        )


def test_secrets_stay_out_of_reprs_and_reasons() -> None:
    config = SourceAuth(bearer_token="am-token-123", hmac_secrets=[SECRET])
    assert "am-token-123" not in repr(config) and SECRET not in repr(config)
    with pytest.raises(Unauthenticated) as caught:
        verify("alertmanager", {"Authorization": "Bearer presented-xyz"}, b"", config, NOW)
    assert "am-token-123" not in caught.value.reason
    assert "presented-xyz" not in caught.value.reason


@pytest.mark.parametrize("value", ["999999999999", "99999999999"])
def test_timestamp_out_of_range_is_unauthenticated(value: str) -> None:
    headers = {**generic_headers(), "X-Siaga-Timestamp": value}
    with pytest.raises(Unauthenticated):
        verify("social", headers, BODY, GENERIC, NOW)


def test_source_auth_refuses_empty_secrets_and_windows() -> None:
    from pydantic import ValidationError

    for bad in (
        {"hmac_secrets": [""]},
        {"bearer_token": " "},
        {"window": timedelta(0)},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            SourceAuth(**bad)


@settings(max_examples=200)
@given(st.binary(max_size=300), st.data())
def test_generic_any_signed_body_passes_and_any_flipped_byte_fails(
    body: bytes, data: st.DataObject
) -> None:
    headers = generic_headers(body)
    verify("social", headers, body, GENERIC, NOW)
    if body:
        i = data.draw(st.integers(0, len(body) - 1))
        flipped = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        with pytest.raises(Unauthenticated, match="does not match"):
            verify("social", headers, flipped, GENERIC, NOW)
