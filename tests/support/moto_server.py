"""moto in server mode on loopback for the AWS tests, and moto's request recorder read over its
own HTTP API: the tests see every request boto3 made, as the server received it."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx

KEY_ID = "AKIAMOTOTESTKEY00001"
SECRET = "moto-test-secret-access-key"
REGION = "ap-southeast-1"


@dataclass
class Moto:
    url: str

    def client(self, service: str, region: str = REGION) -> Any:
        """A boto3 client of our own, for setting up and reading back moto's state."""
        session = boto3.Session(aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name=region)
        return session.client(service, endpoint_url=self.url)

    @contextmanager
    def recording(self) -> Iterator[list[str]]:
        """Record the requests made inside the block; the list fills with their operations when
        the block ends (``FailoverDBCluster``, ``CreateBackup``, ``PUT /bucket/key``)."""
        httpx.post(f"{self.url}/moto-api/recorder/reset-recording").raise_for_status()
        httpx.post(f"{self.url}/moto-api/recorder/start-recording").raise_for_status()
        operations: list[str] = []
        try:
            yield operations
        finally:
            httpx.post(f"{self.url}/moto-api/recorder/stop-recording").raise_for_status()
            text = httpx.get(f"{self.url}/moto-api/recorder/download-recording").text
            operations.extend(_operation(json.loads(line)) for line in text.splitlines() if line.strip())


def _operation(entry: dict[str, Any]) -> str:
    headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
    if "x-amz-target" in headers:  # JSON protocol: DynamoDB, SQS
        return headers["x-amz-target"].rpartition(".")[2]
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    action = parse_qs(body).get("Action")
    if action:  # query protocol: RDS, SNS, STS
        return action[0]
    return f"{entry['method']} {urlsplit(entry['url']).path}"  # REST: Route 53, S3


@contextmanager
def moto_server(recording_file: Path) -> Iterator[Moto]:
    """A ThreadedMotoServer on 127.0.0.1 and a free port."""
    os.environ["MOTO_RECORDER_FILEPATH"] = str(recording_file)  # read when moto is imported
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield Moto(f"http://{host}:{port}")
    finally:
        server.stop()
