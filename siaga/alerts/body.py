"""Webhook bodies decoded into JSON values that every store keeps faithfully, or refused up front.

Public surface::

    decode(body: bytes | str, where: str = "body") -> Any   # raises NotJson or BadPayload
    MAX_DEPTH: int                                          # how deeply a body may nest
    BadPayload                                              # refused, with the reason (HTTP 422)
      NotJson                                               # not JSON at all (HTTP 400)

The rules, the same for every source (each refusal names the path of what is wrong, in text that
is itself valid UTF-8, so the answer carrying it can always be sent):

* UTF-8 (a leading byte-order mark is allowed), as RFC 8259 asks of JSON between systems; anything
  else is `NotJson`, as is text that does not parse.
* Nested at most `MAX_DEPTH` levels. The C parser is bounded by the interpreter's recursion guard
  (about a thousand levels; its `RecursionError` is caught here), and the decoded value is walked
  once, without recursion, before anything else reads it: nothing downstream (models, JSON columns,
  the audit hash) ever meets a value nested deeper.
* Refused rather than kept (`BadPayload`, HTTP 422), because no store keeps them as sent: a lone
  UTF-16 surrogate (half an emoji, ``"\\ud83d"``: not a character, so it cannot be written as
  UTF-8, hashed into the audit trail, or stored by PostgreSQL); a NUL character (PostgreSQL text
  cannot hold one); a number that is not finite (``NaN``, ``Infinity``, or ``1e999``, which
  overflows: not JSON, and PostgreSQL's JSON refuses them). Storing them "faithfully" would mean
  inventing an escape of our own that every reader must undo; no real sender needs them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

__all__ = ["MAX_DEPTH", "BadPayload", "NotJson", "decode", "printable"]

MAX_DEPTH = 64
"""Levels of objects and arrays a body may nest (Alertmanager's deepest is 4, an SNS alarm's 5)."""

_CONTAINERS = (dict, list)
_UNKEEPABLE = re.compile("[\x00\ud800-\udfff]")


class BadPayload(ValueError):
    """A payload that is not what its source sends, or that no store keeps; the message says what
    is wrong (HTTP 422, or 400 for `NotJson`). `siaga.alerts.parsers` raises it too."""


class NotJson(BadPayload):
    """A body that is not UTF-8 JSON text at all (HTTP 400)."""


def printable(text: str) -> str:
    """`text` with what cannot be shown escaped (lone surrogates as ``\\udXXX``, NUL as ``\\x00``):
    safe to put into an answer or a log line."""
    if _UNKEEPABLE.search(text) is None:
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def decode(body: bytes | str, where: str = "body") -> Any:
    """The JSON value of `body`, checked against the rules above; `where` names it in messages
    (``body``, or ``Message`` for the JSON inside an SNS message)."""
    if isinstance(body, bytes | bytearray):
        try:
            text = bytes(body).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise NotJson(f"{where}: not JSON: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    else:
        text = body
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadPayload(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise NotJson(f"{where}: not JSON: {printable(str(exc))}") from None
    _check(value, where)
    return value


def _check(value: Any, where: str) -> None:
    """Walk `value` once, without recursion; raise `BadPayload` at the first thing refused. The
    stack holds containers and their depths, nothing is allocated per item (a body of a million
    small objects would otherwise spend its time in the garbage collector); the path of what is
    refused is looked up only then."""
    if not isinstance(value, _CONTAINERS):
        if (isinstance(value, str) and _unkeepable(value)) or (isinstance(value, float) and not math.isfinite(value)):
            _refuse(value, where)
        return
    items: list[Any] = [value]
    depths: list[int] = [0]
    while items:
        item, depth = items.pop(), depths.pop()
        if depth == MAX_DEPTH:
            raise BadPayload(f"{_path_of(value, where, item)}: nested deeper than {MAX_DEPTH} levels")
        is_object = isinstance(item, dict)
        for key, child in item.items() if is_object else enumerate(item):
            if is_object and _unkeepable(key):
                _refuse(key, _path_of(value, where, item), is_key=True)
            if isinstance(child, _CONTAINERS):
                items.append(child)
                depths.append(depth + 1)
            elif isinstance(child, str):
                if _unkeepable(child):
                    _refuse(child, _path_of(value, where, item, key))
            elif isinstance(child, float) and not math.isfinite(child):
                _refuse(child, _path_of(value, where, item, key))


def _unkeepable(text: str) -> bool:
    return "\x00" in text or (not text.isascii() and _UNKEEPABLE.search(text) is not None)


def _refuse(value: str | float, path: str, *, is_key: bool = False) -> NoReturn:
    """Refuse `value` (text or a number) at `path`; with `is_key`, a key of the object at `path`."""
    if isinstance(value, float):
        raise BadPayload(
            f"{path}: {value!r} is not a finite number (JSON has no NaN or Infinity, and a number "
            "this large overflows)"
        )
    found = _UNKEEPABLE.search(value)
    assert found is not None
    if found.group() == "\x00":
        reason = "holds a NUL character (\\u0000), which PostgreSQL cannot store"
    else:
        reason = (
            f"holds half of a UTF-16 surrogate pair (\\u{ord(found.group()):04x}, a cut emoji?), "
            "which is not a character and cannot be stored"
        )
    shown = f"the key {printable(value)!r}" if is_key else printable(value[:80])
    raise BadPayload(f"{path}: {reason}: {shown}")


def _path_of(root: Any, where: str, target: Any, key: str | int | None = None) -> str:
    """The path (``alerts[0].labels``) of the container `target` inside `root`, and of its item
    `key` if given: a second walk, for a refusal's message only."""
    paths: list[tuple[Any, str]] = [(root, "" if where == "body" else where)]
    while paths:
        item, path = paths.pop()
        if item is target:
            if key is not None:
                path += f"[{key}]" if isinstance(key, int) else f".{printable(key)}"
            path = path.lstrip(".") or where
            return path if len(path) <= 120 else path[:117] + "..."
        children = item.items() if isinstance(item, dict) else enumerate(item)
        for name, child in children:
            if isinstance(child, _CONTAINERS):
                step = f"[{name}]" if isinstance(name, int) else f".{printable(name)}"
                paths.append((child, path + step))
    return where
