"""A sender that streams a chunked body (no Content-Length to be refused by) over a raw socket and
reads while it sends, so it sees when the server answers: before the body ends, or only after.
Used by the receiver's hostile tests and `benchmarks/receiver_body_limit.py`."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sent:
    answered_at: int | None
    """Bytes of body sent when the first byte of the answer came (None: no answer)."""
    sent: int
    """Bytes of body sent in all (a server that stops listening ends the upload)."""
    answer: bytes
    seconds: float

    @property
    def status_line(self) -> str:
        return self.answer.split(b"\r\n", 1)[0].decode("latin-1")


def send_chunked(port: int, total: int, path: str = "/hooks/alertmanager", *, stop_on_answer: bool = True,
                 timeout: float = 60) -> Sent:
    """POST `total` bytes (1 MiB chunks) to 127.0.0.1:`port`; with `stop_on_answer`, stop sending
    once an answer comes, else send everything the server takes and then end the body."""
    frame = f"{MIB:x}\r\n".encode() + b"x" * MIB + b"\r\n"
    sent, answered_at, answer, ended = 0, None, b"", False
    began = time.perf_counter()
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: sender\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        sock.setblocking(False)
        pending = memoryview(frame)
        while time.monotonic() < deadline:
            writing = len(pending) > 0 and not (stop_on_answer and answered_at is not None)
            if not writing and b"\r\n\r\n" in answer:
                break  # the body is over (or abandoned) and the answer's head is in
            readable, writable, _ = select.select([sock], [sock] if writing else [], [], 1)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
                if answered_at is None:
                    answered_at = sent
            elif writable:
                try:
                    done = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += done
                pending = pending[done:]
                if not pending and not ended:
                    ended = sent >= total
                    pending = memoryview(b"0\r\n\r\n" if ended else frame)
    return Sent(answered_at, sent, answer, time.perf_counter() - began)
