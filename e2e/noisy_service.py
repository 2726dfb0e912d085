"""A noisy upstream, the way real services are noisy (think httpbin): two instances of the same
version, asked the same thing at the same moment, do not answer byte for byte the same.

The noise comes in three kinds, all of which a comparison of primary and canary sees:
- echoes of the request, in which a mirror copy differs from the original: `/headers`,
  `/anything/...`, the gzip/deflate echoes and the redirects' absolute `Location` carry the
  Host (`api:8080` for the original, `api-shadow:8080` for a copy) and the copy's marker header;
- values drawn at random per answer: uuids, random bytes, request and event ids;
- the clock: timestamps to the microsecond (and the `Date` header every answer has).

Other endpoints are deterministic, so a canary that changes them is caught: `/json` (a fixed
document), `/status/N`, `/ip`, `/api/accounts/{id}/balance` (computed from the id).

A `variant` makes a canary that differs from the primary on purpose, on one endpoint only:
- `same` (default): the primary's version;
- `changed-field`: the balance endpoint answers in another currency;
- `reset-endpoint`: `/items` resets the connection instead of answering;
- `500-endpoint`: `/json` answers 500.

Tests run it in-process as the responder of a recording `harness.Upstream` (`start(name,
variant)`); standalone, with the venv's Python:

    .venv/bin/python e2e/noisy_service.py --port 8081 [--variant changed-field]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import time
import uuid
import zlib
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

from harness.servers import Received, ResetConnection, Upstream

VARIANTS = ("same", "changed-field", "reset-endpoint", "500-endpoint")

# The endpoint each variant changes, as a request path: a test asks for it and for the others.
CHANGED_PATH = {
    "changed-field": "/api/accounts/42/balance",
    "reset-endpoint": "/items",
    "500-endpoint": "/json",
}

# /bytes/N and /stream/N are bounded: a test asking for more is a mistake, not a load test.
MAX_BYTES = 100 * 1024
MAX_LINES = 100

Reply = "tuple[int, list[tuple[str, str]], bytes]"

JSON_DOC = {
    "slideshow": {
        "author": "Yours Truly",
        "date": "date of publication",
        "slides": [
            {"title": "Wake up to WonderWidgets!", "type": "all"},
            {"items": ["Why <em>WonderWidgets</em> are great", "Who <em>buys</em> WonderWidgets"], "title": "Overview", "type": "all"},
        ],
        "title": "Sample Slide Show",
    }
}
ITEM_NAMES = ["apple", "banana", "cherry", "damson"]


def _json(value, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
    return status, [("content-type", "application/json"), *(headers or [])], json.dumps(value).encode()


def _now() -> dict:
    # To the microsecond: two answers never carry the same time, where a coarser clock would
    # make them differ only sometimes.
    now = time.time_ns() // 1000
    iso = datetime.fromtimestamp(now / 1e6, timezone.utc).isoformat(timespec="microseconds")
    return {"iso": iso, "epoch_us": now}


class NoisyService:
    """The service's answers: a responder for `harness.Upstream`, a function of one received
    request to (status, headers, body). Raises `ResetConnection` where the variant resets."""

    def __init__(self, variant: str = "same"):
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r} is not one of {', '.join(VARIANTS)}")
        self.variant = variant
        self._routes: list[tuple[str, bool, Callable[[Received, str, dict], Reply]]] = [
            # (path or prefix, is a prefix, handler)
            ("/headers", False, self._headers),
            ("/anything", True, self._anything),
            ("/uuid", False, lambda *_: _json({"uuid": str(uuid.uuid4())})),
            ("/ip", False, self._ip),
            ("/now", False, lambda *_: _json(_now())),
            ("/bytes/", True, self._bytes),
            ("/gzip", False, self._gzip),
            ("/deflate", False, self._deflate),
            ("/stream/", True, self._stream),
            ("/redirect-to", False, self._redirect_to),
            ("/absolute-redirect/", True, self._absolute_redirect),
            ("/items", False, self._items),
            ("/json", False, self._json_doc),
            ("/status/", True, self._status),
            ("/api/accounts/", True, self._balance),
        ]

    def __call__(self, req: Received) -> Reply:
        parts = urlsplit(req.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        for route, prefix, handler in self._routes:
            if parts.path == route or (prefix and parts.path.startswith(route.rstrip("/") + "/")):
                return handler(req, parts.path, query)
        return _json({"error": f"no endpoint {parts.path}"}, 404)

    # -- echoes of the request

    @staticmethod
    def _echo(req: Received, path: str, query: dict) -> dict:
        headers: dict[str, str] = {}
        for name, value in req.headers:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return {
            "method": req.method,
            "path": path,
            "args": query,
            "headers": headers,
            "url": f"http://{req.header('host') or ''}{req.path}",
        }

    def _headers(self, req, path, query) -> Reply:
        return _json({"headers": self._echo(req, path, query)["headers"]})

    def _anything(self, req, path, query) -> Reply:
        body = req.body.decode("utf-8", "replace")
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        # Like most APIs, each answer carries an id of its own.
        return _json({**self._echo(req, path, query), "data": body, "json": parsed, "request_id": str(uuid.uuid4())})

    @staticmethod
    def _ip(req, path, query) -> Reply:
        forwarded = req.header("x-forwarded-for")
        return _json({"origin": forwarded.split(",")[0].strip() if forwarded else "127.0.0.1"})

    def _compressed(self, req, path, query, encoding: str, compress: Callable[[bytes], bytes]) -> Reply:
        doc = {**self._echo(req, path, query), "encoding": encoding, "request_id": str(uuid.uuid4()), **_now()}
        return 200, [("content-type", "application/json"), ("content-encoding", encoding)], compress(json.dumps(doc).encode())

    def _gzip(self, req, path, query) -> Reply:
        # mtime=None puts the current time in the gzip header: the compressed bytes differ
        # even where the content would not.
        return self._compressed(req, path, query, "gzip", lambda b: gzip.compress(b, mtime=None))

    def _deflate(self, req, path, query) -> Reply:
        return self._compressed(req, path, query, "deflate", zlib.compress)

    @staticmethod
    def _redirect(location: str) -> Reply:
        return 302, [("location", location), ("content-type", "text/html; charset=utf-8")], b""

    def _absolute(self, req, target: str) -> str:
        return target if urlsplit(target).scheme else f"http://{req.header('host') or ''}{target}"

    def _redirect_to(self, req, path, query) -> Reply:
        return self._redirect(self._absolute(req, query.get("url", "/json")))

    def _absolute_redirect(self, req, path, query) -> Reply:
        n = _int(path.rsplit("/", 1)[-1])
        if n is None or n < 1:
            return _json({"error": "absolute-redirect needs a count of at least 1"}, 400)
        return self._redirect(self._absolute(req, f"/absolute-redirect/{n - 1}" if n > 1 else "/json"))

    # -- random values

    @staticmethod
    def _bytes(req, path, query) -> Reply:
        n = _int(path.rsplit("/", 1)[-1])
        if n is None or not 0 <= n <= MAX_BYTES:
            return _json({"error": f"bytes/N takes N from 0 to {MAX_BYTES}"}, 400)
        return 200, [("content-type", "application/octet-stream")], os.urandom(n)

    @staticmethod
    def _stream(req, path, query) -> Reply:
        n = _int(path.rsplit("/", 1)[-1])
        if n is None or not 0 <= n <= MAX_LINES:
            return _json({"error": f"stream/N takes N from 0 to {MAX_LINES}"}, 400)
        lines = [json.dumps({"id": i, "event_id": str(uuid.uuid4()), "name": f"event-{i}"}) for i in range(n)]
        return 200, [("content-type", "application/x-ndjson")], "".join(line + "\n" for line in lines).encode()

    def _items(self, req, path, query) -> Reply:
        if self.variant == "reset-endpoint":
            raise ResetConnection()
        return _json([{"id": random.getrandbits(63), "name": name} for name in ITEM_NAMES])

    # -- deterministic

    def _json_doc(self, req, path, query) -> Reply:
        if self.variant == "500-endpoint":
            return _json({"error": "internal server error"}, 500)
        return _json(JSON_DOC)

    @staticmethod
    def _status(req, path, query) -> Reply:
        code = _int(path.rsplit("/", 1)[-1])
        if code is None or not 200 <= code <= 599:
            return _json({"error": "status/N takes N from 200 to 599"}, 400)
        no_body = code in (204, 304) or req.method == "HEAD"
        return code, [("content-type", "application/json")], b"" if no_body else json.dumps({"status": code}).encode()

    def _balance(self, req, path, query) -> Reply:
        parts = path.split("/")  # "", api, accounts, ID, balance
        account = _int(parts[3]) if len(parts) == 5 and parts[4] == "balance" else None
        if account is None:
            return _json({"error": f"no endpoint {path}"}, 404)
        currency = "USD" if self.variant == "changed-field" else "EUR"
        return _json({"account": account, "balance": {"amount": account * 7919 % 100_000 / 100, "currency": currency}})


def _int(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def start(name: str, variant: str = "same", port: int = 0) -> Upstream:
    """The service on `port` (0: a free one) of 127.0.0.1, recording what it receives."""
    return Upstream(name, NoisyService(variant), port=port).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--variant", choices=VARIANTS, default="same")
    args = parser.parse_args()
    service = Upstream(f"noisy-{args.variant}", NoisyService(args.variant), port=args.port, record=False).start()
    print(f"noisy service ({args.variant}) on http://127.0.0.1:{service.port}/", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        service.stop()


if __name__ == "__main__":
    main()
