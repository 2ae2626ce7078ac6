"""Real HTTP servers on 127.0.0.1 standing in for the platforms Siaga posts on, each speaking its
provider's documented wire format (paths, auth, bodies, error shapes, rate-limit headers), with
the faults of `payment_standins` (`fail(method, path, Reply | Drop | Slow)`) to script on top:

* `FakeX`: X API v2 ``POST /2/tweets``, ``GET /2/users/me`` and ``GET /2/users/{id}/tweets``;
  OAuth 1.0a signatures verified with oauthlib (a nonce used twice is refused, as X does) or a
  user bearer token; problem objects ``{"title", "detail", "type", "status"}``; 403 for duplicate
  content; ``x-rate-limit-*`` headers on every answer; t.co links and ``&amp;`` in texts it hands back.
* `FakeGraph`: Meta's Graph API for a Facebook Page (feed, comments), an Instagram account (comment
  replies, media containers and publishing) and a WhatsApp Cloud API number (messages: session text
  inside the 24-hour window only, approved templates with their parameter counts); Graph error
  objects ``{"error": {"message", "type", "code", "error_subcode", "error_data", "fbtrace_id"}}``;
  ``appsecret_proof`` checked when an app secret is set. `echo_token` makes its token errors quote
  the token back, as a careless provider might.
* `FakeWebsite`: a content system's notices endpoint: ``PUT /api/notices/{id}`` and ``POST
  /api/notices`` (Idempotency-Key honoured), bearer and ``X-Siaga-Signature`` checked.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1.rfc5849 import signature as oauth_signature

from .payment_standins import Answer, Drop, Reply, Request, Slow, StandIn

__all__ = ["Drop", "FakeGraph", "FakeWebsite", "FakeX", "Reply", "Slow", "production_accounts"]

_ids = itertools.count(1790000000000000001)


def _problem(status: int, title: str, detail: str, kind: str = "about:blank", **extra: Any) -> Answer:
    return status, {"title": title, "detail": detail, "type": kind, "status": status, **extra}, {}


class FakeX(StandIn):
    """One X account, `user_id` @`username`, reached with OAuth 1.0a keys or a bearer token."""

    def __init__(self, keys: dict[str, str] | None = None, bearer: str | None = None) -> None:
        super().__init__()
        self.keys = keys or {}
        self.bearer = bearer
        self.user_id = "1467726470533754880"
        self.username = "siagapay"
        self.posts: list[dict[str, Any]] = []  # newest last
        self.nonces: set[str] = set()

    def route(self, request: Request) -> Answer:
        if not self._authenticated(request):
            status, body, _ = _problem(401, "Unauthorized", "Unauthorized")
            return status, body, self._limits()
        if request.method == "POST" and request.path == "/2/tweets":
            status, body, headers = self._create(request)
        elif request.method == "GET" and request.path == "/2/users/me":
            status, body, headers = 200, {"data": {"id": self.user_id, "name": "Siaga Pay", "username": self.username}}, {}
        elif request.method == "GET" and request.path == f"/2/users/{self.user_id}/tweets":
            status, body, headers = self._timeline(request)
        else:
            status, body, headers = _problem(404, "Not Found Error", f"no route {request.method} {request.path}")
        return status, body, {**self._limits(), **headers}

    def created(self) -> list[dict[str, Any]]:
        return list(self.posts)

    def _limits(self) -> dict[str, str]:
        return {"x-rate-limit-limit": "100", "x-rate-limit-remaining": "99",
                "x-rate-limit-reset": str(int(time.time()) + 900)}

    def _authenticated(self, request: Request) -> bool:
        presented = request.header("Authorization") or ""
        if self.bearer is not None and presented == f"Bearer {self.bearer}":
            return True
        if not presented.startswith("OAuth ") or not self.keys:
            return False
        query = urlencode([(k, v) for k, values in request.query.items() for v in values])
        uri = f"{self.url}{request.path}" + (f"?{query}" if query else "")
        params = oauth_signature.collect_parameters(uri_query=query, headers={"Authorization": presented},
                                                    exclude_oauth_signature=False)
        oauth = dict(params)
        if (oauth.get("oauth_consumer_key") != self.keys["consumer_key"]
                or oauth.get("oauth_token") != self.keys["access_token"]
                or oauth.get("oauth_nonce") in self.nonces):
            return False
        self.nonces.add(oauth["oauth_nonce"])
        checked = OAuthRequest(uri, http_method=request.method)
        checked.params = [(k, v) for k, v in params if k != "oauth_signature"]
        checked.signature = oauth.get("oauth_signature", "")
        return oauth_signature.verify_hmac_sha1(checked, self.keys["consumer_secret"], self.keys["access_token_secret"])

    def _create(self, request: Request) -> Answer:
        try:
            body = request.json()
            text = body["text"]
        except (ValueError, KeyError, TypeError):
            return _problem(400, "Invalid Request", "One or more parameters to your request was invalid.",
                            "https://api.twitter.com/2/problems/invalid-request",
                            errors=[{"message": "$.text: is missing but it is required"}])
        if len(text) > 280:
            return _problem(400, "Invalid Request", "One or more parameters to your request was invalid.",
                            "https://api.twitter.com/2/problems/invalid-request",
                            errors=[{"message": "$.text: must be at most 280 characters"}])
        reply_to = (body.get("reply") or {}).get("in_reply_to_tweet_id")
        if any(p["raw"] == text for p in self.posts):
            return _problem(403, "Forbidden", "You are not allowed to create a Tweet with duplicate content.")
        shown = html.escape(re.sub(r"https?://\S+", "https://t.co/AbCdEf1234", text), quote=False)
        post: dict[str, Any] = {"id": str(next(_ids)), "text": shown, "raw": text,
                                "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        if reply_to:
            post["referenced_tweets"] = [{"type": "replied_to", "id": reply_to}]
        self.posts.append(post)
        return 201, {"data": {"id": post["id"], "edit_history_tweet_ids": [post["id"]], "text": shown}}, {}

    def _timeline(self, request: Request) -> Answer:
        fields = set((request.arg("tweet.fields") or "").split(","))
        since = request.arg("start_time")
        found = []
        for post in reversed(self.posts):
            if since and post["created_at"] < since:
                continue
            entry = {"id": post["id"], "text": post["text"], "edit_history_tweet_ids": [post["id"]]}
            entry |= {f: post[f] for f in ("created_at", "referenced_tweets") if f in fields and f in post}
            found.append(entry)
        found = found[: int(request.arg("max_results") or 10)]
        meta = {"result_count": len(found)} | ({"newest_id": found[0]["id"], "oldest_id": found[-1]["id"]} if found else {})
        return 200, ({"data": found, "meta": meta} if found else {"meta": meta}), {}


def graph_error(status: int, code: int, message: str, *, kind: str = "OAuthException",
                subcode: int | None = None, details: str | None = None, headers: dict[str, str] | None = None
                ) -> Reply:
    """A Graph API error answer, as `fail()` takes it."""
    error: dict[str, Any] = {"message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEfGh123"}
    if subcode is not None:
        error["error_subcode"] = subcode
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return Reply(status, {"error": error}, headers or {})


class FakeGraph(StandIn):
    """Graph API v23.0 for one Page, one Instagram account and one WhatsApp number, all reached
    with `token` (and `appsecret_proof` when `app_secret` is set)."""

    VERSION = "/v23.0"

    def __init__(self, token: str, *, app_secret: str | None = None, echo_token: bool = False) -> None:
        super().__init__()
        self.token = token
        self.app_secret = app_secret
        self.echo_token = echo_token
        self.page_id = "104567890123456"
        self.ig_user_id = "17841400000000001"
        self.phone_number_id = "106540352242922"
        self.objects: dict[str, dict[str, Any]] = {}  # posts, comments, media by id
        self.feed: list[str] = []
        self.comments: dict[str, list[str]] = {}
        self.media: list[str] = []
        self.containers: dict[str, dict[str, Any]] = {}
        self.container_checks = 1  # IN_PROGRESS answers before FINISHED
        self.messages: list[dict[str, Any]] = []
        self.window_open: set[str] = set()  # numbers that wrote to us in the last 24 hours
        self.templates: dict[tuple[str, str], int] = {("incident_update", "id"): 1}  # → body parameters
        self.publish_limit = 100
        self.seed_comment("1780000000000001", on="instagram", text="Kenapa saldo saya hilang??")
        self.seed_comment(f"{self.page_id}_900000000000001", on="facebook", text="Saldo saya terpotong dua kali!")

    @property
    def graph_url(self) -> str:
        return f"{self.url}{self.VERSION}"

    def seed_comment(self, object_id: str, *, on: str, text: str) -> None:
        """A customer's post or comment that Siaga may answer."""
        self.objects[object_id] = {"id": object_id, "message": text, "text": text, "from": {"id": "555", "name": "Budi"}}
        self.comments.setdefault(object_id, [])

    def route(self, request: Request) -> Answer:
        if not request.path.startswith(self.VERSION + "/"):
            return 404, {"error": {"message": "Unknown path components", "type": "OAuthException", "code": 2500}}, {}
        path = request.path.removeprefix(self.VERSION + "/")
        refused = self._refuse_token(request, whatsapp=path.endswith("/messages"))
        if refused:
            return refused
        body = request.json() if request.body else {}
        parts = path.split("/")
        node, edge = parts[0], parts[1] if len(parts) > 1 else None
        if request.method == "POST":
            return self._post(node, edge, body if isinstance(body, dict) else {})
        return self._get(node, edge, request)

    def _refuse_token(self, request: Request, *, whatsapp: bool) -> Answer | None:
        presented = (request.header("Authorization") or "").removeprefix("Bearer ")
        if presented != self.token:
            quoted = f": {presented}" if self.echo_token else ""
            return (401 if whatsapp else 400), {"error": {
                "message": f"Invalid OAuth access token - Cannot parse access token{quoted}",
                "type": "OAuthException", "code": 190, "fbtrace_id": "AqZ0token"}}, {}
        if self.app_secret is not None:
            proof = hmac.new(self.app_secret.encode(), self.token.encode(), hashlib.sha256).hexdigest()
            if request.arg("appsecret_proof") != proof:
                return 400, {"error": {"message": "Invalid appsecret_proof provided in the API argument",
                                       "type": "GraphMethodException", "code": 100, "fbtrace_id": "AqZ0proof"}}, {}
        return None

    def _missing(self, node: str, method: str = "post") -> Answer:
        return 400, {"error": {
            "message": f"Unsupported {method} request. Object with ID '{node}' does not exist, cannot be loaded "
                       "due to missing permissions, or does not support this operation.",
            "type": "GraphMethodException", "code": 100, "error_subcode": 33, "fbtrace_id": "AqZ0missing"}}, {}

    def _invalid(self, message: str) -> Answer:
        return 400, {"error": {"message": f"(#100) {message}", "type": "OAuthException", "code": 100,
                               "fbtrace_id": "AqZ0param"}}, {}

    def _new(self, **fields: Any) -> str:
        object_id = str(next(_ids))
        self.objects[object_id] = {"id": object_id, "created_time": _graph_time(), **fields}
        return object_id

    def _post(self, node: str, edge: str | None, body: dict[str, Any]) -> Answer:
        if node == self.page_id and edge == "feed":
            if not body.get("message") and not body.get("link"):
                return self._invalid("The parameter message or link is required")
            post_id = f"{self.page_id}_{next(_ids)}"
            self.objects[post_id] = {"id": post_id, "message": body.get("message"), "created_time": _graph_time()}
            self.feed.append(post_id)
            self.comments[post_id] = []
            return 200, {"id": post_id}, {}
        if edge == "comments":
            if node not in self.comments:
                return self._missing(node)
            if not body.get("message"):
                return self._invalid("The parameter message is required")
            comment = self._new(message=body["message"], **{"from": {"id": self.page_id, "name": "Siaga Pay"}})
            self.comments[node].append(comment)
            return 200, {"id": comment}, {}
        if edge == "replies":
            if node not in self.comments:
                return self._missing(node)
            reply = self._new(text=body.get("message"), **{"from": {"id": self.ig_user_id, "username": "siagapay"}})
            self.comments[node].append(reply)
            return 200, {"id": reply}, {}
        if node == self.ig_user_id and edge == "media":
            if not body.get("image_url"):
                return self._invalid("The parameter image_url is required.")
            container = str(next(_ids))
            self.containers[container] = {"caption": body.get("caption"), "checks": 0}
            return 200, {"id": container}, {}
        if node == self.ig_user_id and edge == "media_publish":
            if len(self.media) >= self.publish_limit:
                return 400, {"error": {"message": "Application request limit reached", "type": "OAuthException",
                                       "code": 9, "error_subcode": 2207042, "is_transient": False,
                                       "error_user_title": "Cannot publish", "error_user_msg":
                                       "You reached the maximum number of posts that is allowed to be published",
                                       "fbtrace_id": "AqZ0limit"}}, {}
            container = self.containers.pop(str(body.get("creation_id")), None)
            if container is None:
                return self._invalid("The parameter creation_id is required or is invalid")
            media = self._new(caption=container["caption"], timestamp=_graph_time(),
                              permalink="https://www.instagram.com/p/C0FAKE" + str(len(self.media)))
            self.media.append(media)
            return 200, {"id": media}, {}
        if node == self.phone_number_id and edge == "messages":
            return self._message(body)
        return self._missing(node)

    def _get(self, node: str, edge: str | None, request: Request) -> Answer:
        fields = (request.arg("fields") or "id").split(",")
        limit = int(request.arg("limit") or 25)
        if edge is None and node in self.containers:
            container = self.containers[node]
            container["checks"] += 1
            done = container["checks"] > self.container_checks
            return 200, {"id": node, "status_code": "FINISHED" if done else "IN_PROGRESS"}, {}
        if edge is None and node in self.objects:
            return 200, _only(self.objects[node], fields), {}
        if node == self.page_id and edge == "feed":
            since = int(request.arg("since") or 0)
            ids = [i for i in reversed(self.feed) if _epoch(self.objects[i]["created_time"]) >= since]
            return 200, _listing([self.objects[i] for i in ids[:limit]], fields), {}
        if edge in ("comments", "replies") and node in self.comments:
            return 200, _listing([self.objects[i] for i in reversed(self.comments[node])][:limit], fields), {}
        if node == self.ig_user_id and edge == "media":
            return 200, _listing([self.objects[i] for i in reversed(self.media)][:limit], fields), {}
        return self._missing(node, "get")

    def _message(self, body: dict[str, Any]) -> Answer:
        def error(code: int, title: str, details: str) -> Answer:
            return 400, {"error": {"message": f"(#{code}) {title}", "type": "OAuthException", "code": code,
                                   "error_data": {"messaging_product": "whatsapp", "details": details},
                                   "fbtrace_id": "AqZ0wa"}}, {}

        if body.get("messaging_product") != "whatsapp":
            return error(100, "Invalid parameter", "The parameter messaging_product is required.")
        to = str(body.get("to") or "")
        if not re.fullmatch(r"[1-9][0-9]{6,14}", to):
            return error(100, "Invalid parameter", "Parameter 'to' is invalid.")
        kind = body.get("type")
        if kind == "text":
            if not (body.get("text") or {}).get("body"):
                return error(100, "Invalid parameter", "Parameter 'text.body' is required.")
            if to not in self.window_open:
                return error(131047, "Re-engagement message",
                             "Message failed to send because more than 24 hours have passed since the "
                             "customer last replied to this number.")
        elif kind == "template":
            template = body.get("template") or {}
            key = (template.get("name"), (template.get("language") or {}).get("code"))
            if key not in self.templates:
                return error(132001, "Template name does not exist in the translation",
                             f"template name ({key[0]}) does not exist in {key[1]}")
            given = sum(len(c.get("parameters") or []) for c in template.get("components") or []
                        if c.get("type") == "body")
            if given != self.templates[key]:
                return error(132000, "Number of parameters does not match the expected number of params",
                             f"body: number of localizable_params ({given}) does not match the expected "
                             f"number of params ({self.templates[key]})")
        else:
            return error(100, "Invalid parameter", f"Parameter 'type' is invalid: {kind}")
        wamid = f"wamid.HBgN{next(_ids)}"
        self.messages.append({**body, "id": wamid})
        return 200, {"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                     "messages": [{"id": wamid, "message_status": "accepted"}]}, {}


def _graph_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _epoch(stamp: str) -> int:
    return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp())


def _only(entry: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    return {f: entry[f] for f in ["id", *fields] if f in entry}


def _listing(entries: list[dict[str, Any]], fields: list[str]) -> dict[str, Any]:
    return {"data": [_only(e, fields) for e in entries], "paging": {"cursors": {"before": "QVFIUmF", "after": "QVFIUmB"}}}


class FakeWebsite(StandIn):
    """A content system's notices: PUT /api/notices/{id}, POST /api/notices (Idempotency-Key)."""

    def __init__(self, token: str, signing_key: str | None = None, *, echo_token: bool = False) -> None:
        super().__init__()
        self.token = token
        self.signing_key = signing_key
        self.echo_token = echo_token
        self.notices: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str] = {}  # Idempotency-Key → notice id

    def route(self, request: Request) -> Answer:
        presented = request.header("Authorization") or ""
        if presented != f"Bearer {self.token}":
            quoted = f" {presented!r}" if self.echo_token else ""
            return 401, {"error": f"invalid credentials{quoted}"}, {"WWW-Authenticate": "Bearer"}
        if self.signing_key is not None:
            stamp = request.header("X-Siaga-Timestamp") or ""
            mac = hmac.new(self.signing_key.encode(), stamp.encode() + b"." + request.body, hashlib.sha256)
            if request.header("X-Siaga-Signature") != "sha256=" + mac.hexdigest():
                return 401, {"error": "bad signature"}, {}
        try:
            notice = request.json()
        except ValueError:
            return 400, {"error": "body is not JSON"}, {}
        if not isinstance(notice, dict) or not notice.get("title") or not notice.get("text"):
            return 422, {"error": "a notice needs a title and a text"}, {}
        if request.method == "PUT" and request.path.startswith("/api/notices/"):
            notice_id = request.path.removeprefix("/api/notices/")
            created = notice_id not in self.notices
            self.notices[notice_id] = notice
            return (201 if created else 200), {"id": notice_id, "url": f"{self.url}/notices/{notice_id}"}, {}
        if request.method == "POST" and request.path == "/api/notices":
            key = request.header("Idempotency-Key") or ""
            if key in self.keys:
                notice_id = self.keys[key]
                return 200, {"id": notice_id, "url": f"{self.url}/notices/{notice_id}", "replayed": True}, {}
            notice_id = f"n{len(self.notices) + 1}"
            self.notices[notice_id] = notice
            self.keys[key] = notice_id
            return 201, {"id": notice_id, "url": f"{self.url}/notices/{notice_id}"}, {}
        return 404, {"error": "no such endpoint"}, {}


def production_accounts(x: FakeX, graph: FakeGraph) -> dict[str, dict[str, Any]]:
    """Connections to the X account of `x` (``brand``) and the Facebook Page and Instagram account
    of `graph` (``page``, ``insta``) as production accounts without a sandbox; their keys are the
    secrets ``x-ck``, ``x-cs``, ``x-at``, ``x-ats`` and ``meta``."""
    oauth1 = {"consumer_key": "secret://x-ck", "consumer_secret": "secret://x-cs", "access_token": "secret://x-at",
              "access_token_secret": "secret://x-ats"}
    return {
        "brand": {"type": "x", "api_url": f"{x.url}/2", "oauth1": oauth1, "production": True},
        "page": {"type": "facebook", "access_token": "secret://meta", "graph_url": graph.graph_url,
                 "page_id": graph.page_id, "production": True},
        "insta": {"type": "instagram", "access_token": "secret://meta", "graph_url": graph.graph_url,
                  "ig_user_id": graph.ig_user_id, "production": True},
    }
