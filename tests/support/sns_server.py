"""A stand-in for SNS's HTTPS side, on loopback: it serves a signing certificate (``/*.pem``) and
answers ``?Action=ConfirmSubscription`` as SNS does, counting each visit. `SnsKey` signs messages
the way SNS does (a throwaway RSA key and self-signed certificate per test session)."""

from __future__ import annotations

import base64
import ipaddress
import json
import ssl
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from siaga.alerts.signatures import sns_string_to_sign
from siaga.flows.server import free_port

CONFIRMED = b"""<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">
<ConfirmSubscriptionResult><SubscriptionArn>%s</SubscriptionArn></ConfirmSubscriptionResult>
</ConfirmSubscriptionResponse>"""


def _certificate(key: rsa.RSAPrivateKey, name: str, ip: str | None = None) -> bytes:
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
    )
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class SnsKey:
    """Signs SNS messages (SignatureVersion 1 or 2) with a key whose certificate `SnsServer` serves."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = _certificate(self.key, "sns.amazonaws.com")

    def sign(self, message: dict[str, Any], version: str = "2") -> bytes:
        message = {**message, "SignatureVersion": version}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        message["Signature"] = base64.b64encode(
            self.key.sign(sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
        ).decode()
        return json.dumps(message).encode()


class SnsServer:
    """HTTPS on 127.0.0.1:<port> with a self-signed server certificate (`ca_file` trusts it)."""

    def __init__(self, folder: Path, key: SnsKey) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.cert_url = f"https://{self.host}/SimpleNotificationService-{uuid.uuid4().hex}.pem"
        self.key = key
        self.visits: list[str] = []
        tls_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca_file = folder / "sns-server.pem"
        self.ca_file.write_bytes(_certificate(tls_key, "127.0.0.1", ip="127.0.0.1"))
        key_file = folder / "sns-server.key"
        key_file.write_bytes(tls_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.visits.append(self.path)
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                if parts.path.endswith(".pem"):
                    self._answer(200, server.key.pem, "application/x-pem-file")
                elif query.get("Action") == ["ConfirmSubscription"] and query.get("Token"):
                    arn = f"{query.get('TopicArn', ['?'])[0]}:{uuid.uuid4()}"
                    self._answer(200, CONFIRMED % arn.encode(), "text/xml")
                else:
                    self._answer(404, b"not found", "text/plain")

            def _answer(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def visited(self, kind: str) -> list[str]:
        return [v for v in self.visits if (kind == "cert") == urlsplit(v).path.endswith(".pem")]
