"""The AWS actions against moto in server mode on loopback, boto3 pointed at it through the
connection's endpoint_url; compiled runbooks run on a real Prefect server.

moto 5.2 stands in for AWS with limits measured, not assumed, and each test works around them in
the open:
* `failover_db_cluster` flips the writer at once and never shows a `failing-over` status, so the
  wait loop is exercised only in its "already there" case;
* RDS snapshots and DynamoDB backups are `available` at once, so waiting is not exercised either;
* `failover_global_cluster` and AWS Backup are not implemented, and no action here uses them;
* Route 53 health checks always report healthy and no DNS is answered, so a failover is checked
  by reading the record sets back, not by resolving the name;
* S3 refuses CopyObject with a legal-hold header unless it carries Content-MD5 (boto3 sends none
  for a copy), so the action sets the hold after the copy, and the evidence bucket here has Object
  Lock without a default retention (whose copies moto refuses the same way).
What AWS received is read from moto's request recorder over its HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st
from siaga.flows.compiler import compile_runbook
from siaga.flows.steps import perform
from siaga.integrations import default_registry
from siaga.integrations.aws import PREVIEWS, dynamodb, rds, route53, s3, sns
from siaga.integrations.aws._client import AwsError, deduplication_id, derived_name, failure

from siaga.actions import ActionContext, ActionFailed, DrillBehaviour, Mode
from siaga.audit.ledger import Claim, Ledger
from siaga.runbook import parse_runbook
from siaga.settings import Settings
from siaga.store import engine

from ..support.moto_server import KEY_ID, REGION, SECRET, Moto, moto_server
from ..support.settings import settings_with

RUNBOOK_HEAD = """\
runbook: {name}
title: AWS test {name}
severity: sev2
"""


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    with moto_server(tmp_path_factory.mktemp("moto") / "recording.jsonl") as server:
        yield server


@pytest.fixture()
def connections(moto: Moto, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """One `type: aws` connection to moto, with its keys as secret:// references; also written to
    a connections.yaml in `tmp_path` that flows read (`connections_settings`)."""
    monkeypatch.setenv("SIAGA_SECRET_MOTO_KEY_ID", KEY_ID)
    monkeypatch.setenv("SIAGA_SECRET_MOTO_SECRET_KEY", SECRET)
    found = {
        "moto": {
            "type": "aws",
            "region": REGION,
            "endpoint_url": moto.url,
            "access_key_id": "secret://moto-key-id",
            "secret_access_key": "secret://moto-secret-key",
        }
    }
    _write_connections(tmp_path, found)
    return found


def _write_connections(folder: Path, found: dict[str, Any]) -> None:
    (folder / "connections.yaml").write_text(json.dumps({"connections": found}))  # JSON is YAML


def connections_settings(folder: Path) -> Settings:
    """The settings of a flow run that reads the connections.yaml written in `folder`."""
    return settings_with(connections=folder / "connections.yaml")


def context(
    connections: dict[str, Any],
    *,
    step: str = "step",
    run_id: str | None = None,
    incident: str | None = None,
    mode: Mode = Mode.LIVE,
    notes: list[tuple[str, str]] | None = None,
) -> ActionContext:
    async def publish(key: str, markdown: str) -> None:
        if notes is not None:
            notes.append((key, markdown))

    return ActionContext(
        runbook_id="test-aws", step_id=step, run_id=run_id or uuid.uuid4().hex, mode=mode,
        home=Path("."), publish=publish, incident_id=incident, connections=connections,
    )


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_cluster(moto: Moto) -> tuple[str, str, str]:
    """An Aurora cluster with two instances; returns (cluster, writer, reader)."""
    name = unique("ledger")
    client = moto.client("rds")
    client.create_db_cluster(DBClusterIdentifier=name, Engine="aurora-postgresql", MasterUsername="siaga",
                             MasterUserPassword="not-a-real-password")
    for n in (1, 2):
        client.create_db_instance(DBInstanceIdentifier=f"{name}-{n}", DBInstanceClass="db.r6g.large",
                                  Engine="aurora-postgresql", DBClusterIdentifier=name)
    return name, f"{name}-1", f"{name}-2"


def writer(moto: Moto, cluster: str) -> str:
    members = moto.client("rds").describe_db_clusters(DBClusterIdentifier=cluster)["DBClusters"][0]["DBClusterMembers"]
    return next(m["DBInstanceIdentifier"] for m in members if m["IsClusterWriter"])


# --- RDS failover -----------------------------------------------------------------------------


def test_failover_changes_the_writer_and_returns_old_and_new(moto: Moto, connections: dict) -> None:
    cluster, first, second = make_cluster(moto)
    notes: list[tuple[str, str]] = []
    with moto.recording() as calls:
        result = run(rds.failover(rds.RdsFailover(cluster=cluster, target=second), context(connections, notes=notes)))
    assert (result.old_writer, result.new_writer, result.failed_over) == (first, second, True)
    assert result.status == "available" and result.region == REGION
    assert writer(moto, cluster) == second
    assert calls.count("FailoverDBCluster") == 1
    assert notes and first in notes[0][1] and second in notes[0][1], "the writer before is noted first"


def test_failover_to_the_current_writer_calls_nothing(moto: Moto, connections: dict) -> None:
    cluster, first, _ = make_cluster(moto)
    with moto.recording() as calls:
        result = run(rds.failover(rds.RdsFailover(cluster=cluster, target=first), context(connections)))
    assert (result.old_writer, result.new_writer, result.failed_over) == (first, first, False)
    assert "FailoverDBCluster" not in calls


def test_a_restarted_failover_reconciles_and_never_fails_over_again(moto: Moto, connections: dict) -> None:
    """The first attempt fails over and dies before writing its outcome to the ledger; the
    restarted step finds the target already writing and records that, calling no failover."""
    cluster, first, second = make_cluster(moto)
    spec = default_registry()["aws.rds.failover"]
    params = rds.RdsFailover(cluster=cluster, target=second)
    ledger = Ledger(engine(Settings.from_environ(os.environ).store_url))
    step = context(connections, step="failover-db", incident=unique("INC"))
    key = f"{step.idempotency_key}:{spec.name}"
    with moto.recording() as calls:
        claim, _ = ledger.claim(key, spec.name, params.model_dump(mode="json"), step.run_id)
        assert claim is Claim.NEW
        run(spec.run(params, step))  # it acted ... and the process died before ledger.done
        entry = ledger.get(key)
        assert entry is not None and entry.state == "intent"
        restarted = run(perform(spec, params, step, DrillBehaviour.RECORD, ledger))
    assert calls.count("FailoverDBCluster") == 1, calls
    assert writer(moto, cluster) == second, "no flip back to the old writer"
    assert restarted.status == "completed"
    assert restarted.output["new_writer"] == second and restarted.output["old_writer"] is None
    assert "found done" in restarted.output["note"]
    settled = ledger.get(key)
    assert settled is not None and settled.state == "done"

    with moto.recording() as calls:
        third = run(perform(spec, params, step, DrillBehaviour.RECORD, ledger))
    assert calls == [] and third.note and "already done" in third.note


def test_an_unknown_cluster_is_refused_with_a_todo(moto: Moto, connections: dict) -> None:
    spec = default_registry()["aws.rds.failover"]
    ledger = Ledger(engine(Settings.from_environ(os.environ).store_url))
    step = context(connections, step="failover-db")
    with pytest.raises(ActionFailed) as caught:
        run(perform(spec, rds.RdsFailover(cluster="no-such-cluster", target="x"), step, DrillBehaviour.RECORD, ledger))
    error = caught.value
    assert error.changed is False and not error.retryable
    assert "DBClusterNotFoundFault" in str(error) and "no-such-cluster" in str(error)
    assert error.todo and "parameters" in error.todo
    entry = ledger.get(f"{step.idempotency_key}:{spec.name}")
    assert entry is not None and entry.state == "failed", "nothing changed: the step may be run again"

    cluster, _, _ = make_cluster(moto)
    with pytest.raises(ActionFailed) as caught:
        run(rds.failover(rds.RdsFailover(cluster=cluster, target="not-a-member"), context(connections)))
    assert caught.value.changed is False and "not a member" in str(caught.value) and caught.value.todo


def test_failover_preview_reads_and_changes_nothing(moto: Moto, connections: dict) -> None:
    cluster, first, second = make_cluster(moto)
    with moto.recording() as calls:
        preview = run(PREVIEWS["aws.rds.failover"](rds.RdsFailover(cluster=cluster, target=second), context(connections)))
    assert preview["summary"].startswith(f"This will promote instance {second} to writer of cluster {cluster}")
    assert f"the current writer is {first}" in preview["summary"]
    assert preview["current_writer"] == first and set(preview["members"]) == {first, second}
    assert calls == ["DescribeDBClusters"] and writer(moto, cluster) == first


# --- snapshots --------------------------------------------------------------------------------


def test_cluster_snapshot_has_a_deterministic_id_and_a_retry_finds_it(moto: Moto, connections: dict) -> None:
    cluster, _, _ = make_cluster(moto)
    step = context(connections, step="snapshot-ledger", incident=unique("INC"))
    params = rds.SnapshotCluster(cluster=cluster)
    with moto.recording() as calls:
        first = run(rds.snapshot_cluster(params, step))
        retried = run(rds.snapshot_cluster(params, step))
    assert first.snapshot_id == retried.snapshot_id == rds.snapshot_id(step)
    assert first.status == "available" and first.snapshot_arn and first.source == cluster
    assert (first.found_existing, retried.found_existing) == (False, True)
    assert calls.count("CreateDBClusterSnapshot") == 2, "the retry's create is refused as a duplicate"
    manual = moto.client("rds").describe_db_cluster_snapshots(DBClusterIdentifier=cluster, SnapshotType="manual")
    assert [s["DBClusterSnapshotIdentifier"] for s in manual["DBClusterSnapshots"]] == [first.snapshot_id]
    tags = moto.client("rds").list_tags_for_resource(ResourceName=first.snapshot_arn)["TagList"]
    assert {"Key": "siaga:idempotency-key", "Value": step.idempotency_key} in tags

    found = run(rds.reconcile_snapshot_cluster(params, step))
    assert found is not None and found.snapshot_id == first.snapshot_id
    assert run(rds.reconcile_snapshot_cluster(params, context(connections, step="another-step"))) is None


def test_instance_snapshot_is_idempotent_too(moto: Moto, connections: dict) -> None:
    instance = unique("wallet")
    moto.client("rds").create_db_instance(
        DBInstanceIdentifier=instance, DBInstanceClass="db.t3.micro", Engine="postgres", AllocatedStorage=20,
        MasterUsername="siaga", MasterUserPassword="not-a-real-password",
    )
    step = context(connections, step="snapshot-wallet")
    params = rds.SnapshotInstance(instance=instance)
    first = run(rds.snapshot_instance(params, step))
    retried = run(rds.snapshot_instance(params, step))
    assert first.snapshot_id == retried.snapshot_id and retried.found_existing and first.kind == "instance"
    snapshots = moto.client("rds").describe_db_snapshots(DBInstanceIdentifier=instance, SnapshotType="manual")
    assert [s["DBSnapshotIdentifier"] for s in snapshots["DBSnapshots"]] == [first.snapshot_id]
    assert run(rds.reconcile_snapshot_instance(params, step)) == retried


@given(st.text(min_size=1, max_size=300), st.none() | st.text(max_size=300))
def test_derived_names_follow_the_rds_identifier_rules(key: str, label: str | None) -> None:
    name = derived_name(key, label=label)
    assert len(name) <= 63
    assert re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", name), name
    assert derived_name(key, label=label) == name


def test_long_keys_cut_short_stay_distinct() -> None:
    base = "a" * 200
    assert derived_name(base + "1") != derived_name(base + "2")
    assert derived_name("0e8f7c1a-2b3c-4d5e-8f90-123456789abc:snapshot-ledger").startswith("siaga-0e8f7c1a-2b3c")


# --- Route 53 ---------------------------------------------------------------------------------


def make_failover_pair(moto: Moto) -> tuple[str, str, str]:
    """A zone with api.<zone> as a PRIMARY/SECONDARY CNAME pair; returns (zone, zone id, name)."""
    zone = f"{unique('z')}.example.com"
    client = moto.client("route53")
    zone_id = client.create_hosted_zone(Name=zone, CallerReference=unique("ref"))["HostedZone"]["Id"]
    check = client.create_health_check(CallerReference=unique("hc"), HealthCheckConfig={
        "Type": "HTTPS", "FullyQualifiedDomainName": "lb-primary.example.net", "Port": 443, "ResourcePath": "/health",
    })["HealthCheck"]["Id"]
    name = f"api.{zone}."
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {
            "Name": name, "Type": "CNAME", "SetIdentifier": "primary", "Failover": "PRIMARY", "TTL": 60,
            "ResourceRecords": [{"Value": "lb-primary.example.net"}], "HealthCheckId": check}},
        {"Action": "CREATE", "ResourceRecordSet": {
            "Name": name, "Type": "CNAME", "SetIdentifier": "secondary", "Failover": "SECONDARY", "TTL": 60,
            "ResourceRecords": [{"Value": "lb-dr.example.net"}]}},
        {"Action": "CREATE", "ResourceRecordSet": {
            "Name": f"www.{zone}.", "Type": "A", "TTL": 300, "ResourceRecords": [{"Value": "192.0.2.10"}]}},
    ]})
    return zone, zone_id.removeprefix("/hostedzone/"), name


def records(moto: Moto, zone_id: str, name: str, kind: str) -> dict[str | None, dict[str, Any]]:
    found = moto.client("route53").list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=name,
                                                             StartRecordType=kind)["ResourceRecordSets"]
    return {r.get("SetIdentifier"): r for r in found if r["Name"] == name and r["Type"] == kind}


def test_route53_failover_and_restore_round_trip(moto: Moto, connections: dict) -> None:
    zone, zone_id, name = make_failover_pair(moto)
    before = records(moto, zone_id, name, "CNAME")
    params = route53.Route53Failover(zone=zone, name=f"api.{zone}", type="CNAME")
    notes: list[tuple[str, str]] = []
    result = run(route53.failover(params, context(connections, step="switch-dns", notes=notes)))
    assert result.changed and result.status == "INSYNC" and result.zone_id == zone_id
    assert result.previous == before["primary"]
    after = records(moto, zone_id, name, "CNAME")
    assert after["primary"]["ResourceRecords"] == [{"Value": "lb-dr.example.net"}], "the primary answers the standby"
    assert after["primary"]["HealthCheckId"] == before["primary"]["HealthCheckId"]
    assert after["primary"]["Failover"] == "PRIMARY" and after["secondary"] == before["secondary"]
    assert notes and "lb-primary.example.net" in notes[0][1], "the record set before is noted first"

    again = run(route53.failover(params, context(connections, step="switch-dns")))
    assert not again.changed and again.status == "unchanged"
    found = run(route53.reconcile_failover(params, context(connections, step="switch-dns")))
    assert found is not None and found.previous is None

    # The undo, with the step's output as a runbook passes it: `{{ step.output.previous }}`.
    output = json.loads(result.model_dump_json())
    restore = route53.Route53Restore(zone=zone_id, previous=output["previous"])
    restored = run(route53.restore(restore, context(connections, step="undo-switch-dns")))
    assert restored.changed and records(moto, zone_id, name, "CNAME") == before
    assert not run(route53.restore(restore, context(connections, step="undo-switch-dns"))).changed
    assert run(route53.reconcile_restore(restore, context(connections))) is not None

    with pytest.raises(ActionFailed) as caught:
        run(route53.restore(route53.Route53Restore(zone=zone_id, previous=found.previous), context(connections)))
    assert caught.value.changed is False and "route53-before-" in (caught.value.todo or "")


def test_route53_failover_to_a_standby_target(moto: Moto, connections: dict) -> None:
    zone, zone_id, _ = make_failover_pair(moto)
    name = f"www.{zone}."
    params = route53.Route53Failover(zone=zone, name=name, values=["198.51.100.7"], ttl=30)
    with moto.recording() as calls:
        preview = run(PREVIEWS["aws.route53.failover"](params, context(connections)))
    assert preview["summary"] == f"This will point {name} (A) at 198.51.100.7; it answers 192.0.2.10 now."
    assert "POST" not in " ".join(calls), "a preview changes nothing"
    result = run(route53.failover(params, context(connections, step="switch-www")))
    assert result.previous is not None and result.previous["ResourceRecords"] == [{"Value": "192.0.2.10"}]
    assert records(moto, zone_id, name, "A")[None]["ResourceRecords"] == [{"Value": "198.51.100.7"}]
    assert records(moto, zone_id, name, "A")[None]["TTL"] == 30

    with pytest.raises(ActionFailed) as caught:
        run(route53.failover(route53.Route53Failover(zone=zone, name=f"nothing.{zone}", values=["198.51.100.8"]),
                             context(connections)))
    assert caught.value.changed is False and "no record" in str(caught.value)


# --- DynamoDB, S3, SNS ------------------------------------------------------------------------


def test_dynamodb_backup_is_named_after_the_step_and_taken_once(moto: Moto, connections: dict) -> None:
    table = unique("wallet")
    moto.client("dynamodb").create_table(
        TableName=table, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
    )
    step = context(connections, step="backup-wallet", incident=unique("INC"))
    params = dynamodb.DynamodbBackup(table=table)
    with moto.recording() as calls:
        first = run(dynamodb.backup(params, step))
        retried = run(dynamodb.backup(params, step))
    assert first.backup_name == retried.backup_name == dynamodb.backup_name(step)
    assert first.backup_arn == retried.backup_arn and first.status == "AVAILABLE" and retried.found_existing
    assert calls.count("CreateBackup") == 1
    listed = moto.client("dynamodb").list_backups(TableName=table)["BackupSummaries"]
    assert [b["BackupName"] for b in listed] == [first.backup_name]
    assert run(dynamodb.reconcile_backup(params, step)) == retried
    assert run(dynamodb.reconcile_backup(params, context(connections, step="other"))) is None

    with pytest.raises(ActionFailed) as caught:
        run(dynamodb.backup(dynamodb.DynamodbBackup(table="no-such-table"), step))
    assert caught.value.changed is False and caught.value.todo


def make_buckets(moto: Moto) -> tuple[str, str, str]:
    """(source with logs, evidence bucket with Object Lock, evidence bucket without)."""
    client = moto.client("s3")
    names = unique("logs"), unique("evidence"), unique("plain")
    location = {"LocationConstraint": REGION}
    client.create_bucket(Bucket=names[0], CreateBucketConfiguration=location)
    client.create_bucket(Bucket=names[1], CreateBucketConfiguration=location, ObjectLockEnabledForBucket=True)
    client.create_bucket(Bucket=names[2], CreateBucketConfiguration=location)
    for key in ("app/2026-11-24.log", "app/2026-11-25.log", "app/audit/login.json", "other/keep-out.txt"):
        client.put_object(Bucket=names[0], Key=key, Body=f"contents of {key}".encode())
    return names


def test_s3_copy_preserves_evidence_with_a_legal_hold(moto: Moto, connections: dict) -> None:
    source, evidence, plain = make_buckets(moto)
    client = moto.client("s3")
    step = context(connections, step="preserve-logs", incident="INC-77")
    params = s3.S3Copy(bucket=source, prefix="app/", evidence_bucket=evidence)
    result = run(s3.copy(params, step))
    assert result.object_lock and result.evidence_prefix == "siaga-evidence/INC-77/preserve-logs/"
    assert sorted(c.key for c in result.copied) == ["app/2026-11-24.log", "app/2026-11-25.log", "app/audit/login.json"]
    for copied in result.copied:
        assert copied.evidence_key == f"siaga-evidence/INC-77/preserve-logs/{source}/{copied.key}"
        original = client.head_object(Bucket=source, Key=copied.key)
        assert copied.etag == copied.source_etag == original["ETag"]
        body = client.get_object(Bucket=evidence, Key=copied.evidence_key)["Body"].read()
        assert body == f"contents of {copied.key}".encode()
        hold = client.get_object_legal_hold(Bucket=evidence, Key=copied.evidence_key)
        assert hold["LegalHold"]["Status"] == "ON" and copied.legal_hold

    found = run(s3.reconcile_copy(params, step))
    assert found is not None and found.found_existing
    assert {c.evidence_key: c.etag for c in found.copied} == {c.evidence_key: c.etag for c in result.copied}

    unlocked = run(s3.copy(s3.S3Copy(bucket=source, prefix="app/", evidence_bucket=plain), step))
    assert not unlocked.object_lock and not any(c.legal_hold for c in unlocked.copied)
    with moto.recording() as calls:
        with pytest.raises(ActionFailed) as caught:
            run(s3.copy(s3.S3Copy(bucket=source, prefix="app/", evidence_bucket=plain, require_lock=True), step))
    assert caught.value.changed is False and "Object Lock" in str(caught.value)
    assert not any(call.startswith("PUT") for call in calls), "nothing copied into an unlocked bucket"


def subscribed_queue(moto: Moto, topic_arn: str, *, fifo: bool = False) -> str:
    sqs = moto.client("sqs")
    name = unique("inbox") + (".fifo" if fifo else "")
    queue = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    moto.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return queue


def received(moto: Moto, queue: str) -> list[dict[str, Any]]:
    messages = moto.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def test_sns_publish_reaches_a_subscribed_queue(moto: Moto, connections: dict) -> None:
    topic = moto.client("sns").create_topic(Name=unique("ops"))["TopicArn"]
    queue = subscribed_queue(moto, topic)
    params = sns.SnsPublish(topic_arn=topic, subject="Ledger failover", message="Ledger DB failed over to the replica.")
    result = run(sns.publish(params, context(connections, step="tell-ops")))
    assert result.published and result.message_id and not result.fifo
    [message] = received(moto, queue)
    assert (message["Subject"], message["Message"]) == ("Ledger failover", "Ledger DB failed over to the replica.")
    assert message["MessageId"] == result.message_id


def test_sns_fifo_publish_is_deduplicated_by_the_step(moto: Moto, connections: dict) -> None:
    topic = moto.client("sns").create_topic(Name=unique("ops") + ".fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    queue = subscribed_queue(moto, topic, fifo=True)
    step = context(connections, step="tell-ops", incident=unique("INC"))
    params = sns.SnsPublish(topic_arn=topic, message="Payouts frozen.")
    first = run(sns.publish(params, step))
    again = run(sns.publish(params, step))  # the same step, sent again
    assert first.fifo and first.deduplication_id == again.deduplication_id == deduplication_id(step.idempotency_key)
    assert [m["Message"] for m in received(moto, queue)] == ["Payouts frozen."], "SQS FIFO drops the repeat"


def test_sns_in_a_drill_is_marked_and_never_reaches_production(moto: Moto, connections: dict) -> None:
    topic = moto.client("sns").create_topic(Name=unique("ops"))["TopicArn"]
    queue = subscribed_queue(moto, topic)
    spec = default_registry()["aws.sns.publish"]
    params = sns.SnsPublish(topic_arn=topic, subject="Failover", message="Ledger DB failed over.")
    drilled = run(perform(spec, params, context(connections, mode=Mode.DRILL), spec.drill_behaviour))
    assert drilled.status == "completed" and drilled.output["published"]
    [message] = received(moto, queue)
    assert (message["Subject"], message["Message"]) == ("[DRILL] Failover", "[DRILL] Ledger DB failed over.")

    production = {"moto": {**connections["moto"], "production": True}}
    with moto.recording() as calls:
        kept = run(perform(spec, params, context(production, mode=Mode.DRILL), spec.drill_behaviour))
    assert kept.status == "recorded" and "production" in kept.note
    assert calls == [] and received(moto, queue) == []


# --- connections, errors ----------------------------------------------------------------------


def test_a_role_is_assumed_with_sts(moto: Moto, connections: dict) -> None:
    cluster, first, _ = make_cluster(moto)
    with_role = {"moto": {**connections["moto"], "role_arn": "arn:aws:iam::123456789012:role/siaga-crisis"}}
    with moto.recording() as calls:
        preview = run(rds.preview_failover(rds.RdsFailover(cluster=cluster, target=first), context(with_role)))
    assert calls == ["AssumeRole", "DescribeDBClusters"]
    assert "already is the writer" in preview["summary"]


def test_the_session_factory_gets_the_secret_keys_and_the_step_region(moto: Moto, connections: dict) -> None:
    moto.client("rds", region="ap-southeast-3").create_db_cluster(
        DBClusterIdentifier="jakarta-ledger", Engine="aurora-postgresql", MasterUsername="siaga",
        MasterUserPassword="not-a-real-password",
    )
    made: list[dict[str, Any]] = []

    def factory(**options: Any) -> boto3.Session:
        made.append(options)
        return boto3.Session(**options)

    params = rds.RdsFailover(cluster="jakarta-ledger", target="none", region="ap-southeast-3")
    preview = run(rds.preview_failover(params, context(connections), session_factory=factory))
    assert preview["region"] == "ap-southeast-3" and "would fail" in preview["summary"]
    assert made == [{"profile_name": None, "region_name": "ap-southeast-3",
                     "aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}]


def test_a_connection_with_half_a_key_pair_is_refused(connections: dict) -> None:
    broken = {"moto": {k: v for k, v in connections["moto"].items() if k != "secret_access_key"}}
    with pytest.raises(ActionFailed) as caught:
        run(rds.failover(rds.RdsFailover(cluster="c", target="t"), context(broken)))
    assert "not valid" in str(caught.value) and caught.value.changed is False


def test_aws_errors_say_whether_anything_changed() -> None:
    def error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                           "FailoverDBCluster")

    throttled = failure("rds", "failover_db_cluster", error("Throttling", 400))
    assert throttled.retryable and throttled.changed is False
    unknown = failure("rds", "failover_db_cluster", error("InternalFailure", 500))
    assert unknown.retryable and unknown.changed is None
    denied = failure("rds", "failover_db_cluster", error("AccessDenied", 403))
    assert not denied.retryable and denied.changed is False and "rds:FailoverDBCluster" in (denied.todo or "")
    busy = failure("rds", "failover_db_cluster", error("InvalidDBClusterStateFault", 400))
    assert busy.retryable and busy.changed is False
    assert isinstance(busy, AwsError) and busy.code == "InvalidDBClusterStateFault"


def test_the_registry_declares_risk_undo_and_reconcile() -> None:
    registry = default_registry()
    aws = [spec for spec in registry if spec.name.startswith("aws.")]
    assert {s.name for s in aws} == {
        "aws.rds.failover", "aws.rds.snapshot_cluster", "aws.rds.snapshot_instance", "aws.route53.failover",
        "aws.route53.restore", "aws.dynamodb.backup", "aws.s3.copy", "aws.sns.publish",
    }
    assert registry["aws.route53.failover"].undo == "aws.route53.restore"
    assert registry["aws.rds.failover"].undo is None
    assert {s.name for s in aws if s.risk == "destructive"} == {"aws.rds.failover", "aws.route53.failover"}
    assert all(s.reconcile is not None for s in aws if s.name != "aws.sns.publish")
    assert registry["aws.sns.publish"].message_fields == ("subject", "message")
    assert set(PREVIEWS) == {"aws.rds.failover", "aws.route53.failover"}


# --- compiled runbooks on a real Prefect server -----------------------------------------------


def run_flow(text: str, settings: Settings, **parameters: Any) -> tuple[Any, Any]:
    runbook = parse_runbook(textwrap.dedent(text), default_registry(), file="test.yaml")

    async def go() -> tuple[Any, Any]:
        state = await compile_runbook(runbook, settings=settings)(**parameters, return_state=True)
        return state, await state.aresult(raise_on_failure=False)

    return asyncio.run(go())


SNAPSHOT_THEN_FAILOVER = RUNBOOK_HEAD + """
inputs:
  cluster: {{type: string}}
  target: {{type: string}}
steps:
  - id: snapshot-ledger
    action: aws.rds.snapshot_cluster
    with: {{cluster: "{{{{ inputs.cluster }}}}"}}
  - id: failover-db
    action: aws.rds.failover
    with: {{cluster: "{{{{ inputs.cluster }}}}", target: "{{{{ inputs.target }}}}", wait: 1m}}
"""


@pytest.mark.usefixtures("prefect_api")
def test_a_compiled_runbook_snapshots_then_fails_over(moto: Moto, connections: dict, tmp_path: Path) -> None:
    cluster, first, second = make_cluster(moto)
    settings = connections_settings(tmp_path)
    text = SNAPSHOT_THEN_FAILOVER.format(name="aws-snapshot-failover")
    incident = {"id": unique("INC")}
    with moto.recording() as calls:
        state, summary = run_flow(text, settings, cluster=cluster, target=second, incident=incident)
    assert state.is_completed(), state.message
    assert [s["outcome"] for s in summary["steps"]] == ["completed", "completed"]
    assert calls.index("CreateDBClusterSnapshot") < calls.index("FailoverDBCluster")
    assert calls.count("FailoverDBCluster") == 1 and writer(moto, cluster) == second
    manual = moto.client("rds").describe_db_cluster_snapshots(DBClusterIdentifier=cluster, SnapshotType="manual")
    [snapshot] = [s["DBClusterSnapshotIdentifier"] for s in manual["DBClusterSnapshots"]]
    key = f"{incident['id']}:snapshot-ledger"
    assert snapshot == derived_name(key, label=f"snapshot-ledger-{incident['id']}")
    assert snapshot.startswith(f"siaga-snapshot-ledger-{incident['id'].lower()}-")

    # The same incident's runbook again (a duplicate alert): the ledger answers, AWS is not called.
    with moto.recording() as calls:
        state, summary = run_flow(text, settings, cluster=cluster, target=second, incident=incident)
    assert state.is_completed(), state.message
    assert calls == []
    assert writer(moto, cluster) == second


@pytest.mark.usefixtures("prefect_api")
def test_a_drill_records_and_makes_no_aws_call(moto: Moto, connections: dict, tmp_path: Path) -> None:
    cluster, first, second = make_cluster(moto)
    zone, zone_id, name = make_failover_pair(moto)
    source, evidence, _ = make_buckets(moto)
    before = records(moto, zone_id, name, "CNAME")
    text = RUNBOOK_HEAD.format(name="aws-drill") + f"""
steps:
  - {{id: snapshot-ledger, action: aws.rds.snapshot_cluster, with: {{cluster: {cluster}}}}}
  - {{id: failover-db, action: aws.rds.failover, with: {{cluster: {cluster}, target: {second}}}}}
  - id: switch-dns
    action: aws.route53.failover
    with: {{zone: {zone}, name: {name}, type: CNAME}}
    undo: {{action: aws.route53.restore, with: {{zone: {zone}, previous: "{{{{ step.output.previous }}}}"}}}}
  - {{id: preserve-logs, action: aws.s3.copy, with: {{bucket: {source}, prefix: app/, evidence_bucket: {evidence}}}}}
"""
    with moto.recording() as calls:
        state, summary = run_flow(text, connections_settings(tmp_path), mode="drill")
    assert state.is_completed(), state.message
    assert [s["outcome"] for s in summary["steps"]] == ["recorded"] * 4
    assert calls == [], "a drill calls nothing at AWS"
    assert writer(moto, cluster) == first and records(moto, zone_id, name, "CNAME") == before
    assert moto.client("rds").describe_db_cluster_snapshots(DBClusterIdentifier=cluster,
                                                            SnapshotType="manual")["DBClusterSnapshots"] == []
    assert "Contents" not in moto.client("s3").list_objects_v2(Bucket=evidence)


@pytest.mark.usefixtures("prefect_api")
def test_a_failed_runbook_restores_dns_and_never_shows_the_secret(
    moto: Moto, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, siaga_home: Path
) -> None:
    """A canary access key configured as secret:// runs a failover that is undone after a later
    step fails on an unknown cluster; the canary appears in no log, output, artifact or error."""
    canary_id, canary_secret = "AKIACANARY" + uuid.uuid4().hex[:10].upper(), "canary-" + uuid.uuid4().hex
    monkeypatch.setenv("SIAGA_SECRET_CANARY_KEY_ID", canary_id)
    monkeypatch.setenv("SIAGA_SECRET_CANARY_SECRET_KEY", canary_secret)
    _write_connections(tmp_path, {"canary": {
        "type": "aws", "region": REGION, "endpoint_url": moto.url,
        "access_key_id": "secret://canary-key-id", "secret_access_key": "secret://canary-secret-key",
    }})
    zone, zone_id, name = make_failover_pair(moto)
    before = records(moto, zone_id, name, "CNAME")
    text = RUNBOOK_HEAD.format(name="aws-canary") + f"""
steps:
  - id: switch-dns
    action: aws.route53.failover
    with: {{zone: {zone}, name: {name}, type: CNAME}}
    undo: {{action: aws.route53.restore, with: {{zone: {zone}, previous: "{{{{ step.output.previous }}}}"}}}}
  - id: failover-db
    action: aws.rds.failover
    retries: 2
    retry_delay: 0s
    with: {{cluster: no-such-cluster, target: no-such-instance}}
"""
    with moto.recording() as calls:
        state, failed = run_flow(text, connections_settings(tmp_path))
    assert state.is_failed()
    outcomes = {s["step"]: (s["outcome"], s["undo_outcome"]) for s in failed.summary["steps"]}
    assert outcomes == {"switch-dns": ("completed", "completed"), "failover-db": ("failed", "")}
    assert records(moto, zone_id, name, "CNAME") == before, "the undo put the record set back"
    assert calls.count("DescribeDBClusters") == 1, "a refusal is not retried"
    text = str(failed)
    assert "DBClusterNotFoundFault" in text and "check the names in the step's parameters" in text

    run_id = str(state.state_details.flow_run_id)
    ledger = [json.dumps(e.__dict__, default=str) for e in Ledger(engine(Settings.from_environ(os.environ).store_url)).entries() if e.run_id == run_id]
    seen = [text, json.dumps(failed.summary), (siaga_home / "logs" / "siaga.jsonl").read_text(), *ledger]
    seen += asyncio.run(_prefect_record(state.state_details.flow_run_id))
    assert len(ledger) == 3, "switch-dns, its undo and failover-db are in the ledger"
    assert sum("switch-dns" in s for s in seen[-3:]) == 3, "the run's logs, artifacts and record were read"
    for where in seen:
        assert canary_id not in where and canary_secret not in where


async def _prefect_record(flow_run_id: Any) -> list[str]:
    """The run's logs, artifacts and task run results as Prefect's API returns them."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async with get_client() as client:
        for _ in range(60):  # the run's logs reach the server in batches, after the run ends
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            if any("step failed" in log.message for log in logs):
                break
            await asyncio.sleep(0.25)
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        run = await client.read_flow_run(flow_run_id)
    return [
        "\n".join(log.message for log in logs),
        "\n".join(json.dumps(a.data, default=str) for a in artifacts),
        run.model_dump_json(),
    ]
