"""Hostile requests against a real Envoy running the shipped envoy.yaml (classification, routes on
x-user-class, mirroring to a canary, FAIL_RELOAD): each has a defined outcome, and none traps
the VM.

For every case, the table says what Envoy or the filter does with it:
  - `Reached(upstream, cls, decision)`: the route took it to `upstream` carrying exactly one
    class header, `cls`; the mirror decision counted was `decision` (for `mirrored`, the canary
    received a faithful copy and the answers compared `match`); the client got that upstream's
    answer byte for byte.
  - `Refused(status)` / `Reset()` / `Closed()`: Envoy's codec turned it away before any filter
    (an HTTP/1 error status, an HTTP/2 RST_STREAM, or the connection closed): no upstream saw
    it and the filter counted nothing.
After each case the VM is checked alive (no trap line in the log, no VM created or reloaded:
test_panic.py shows each of those signals on a real trap), and each Envoy ends with a normal
request classified and mirrored.

Three Envoys, started once for the module:
  - `edge`: envoy.yaml with `max_request_headers_kb: 96`, so a 60 KB cookie or path gets past
    Envoy's 60 KiB default and reaches the filter;
  - `defaults`: envoy.yaml as shipped (Envoy's default limits);
  - `inner`: envoy.yaml as an inner hop: `trust_incoming_header: true`, and the cohort bucketed
    by an `x-user-id` header (set by an authenticating edge) instead of a cookie.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable

import pytest

import harness

CLASS = "x-user-class"
REQUESTS_TOTAL = "progressive_delivery_requests_total"
MIRROR_TOTAL = "progressive_delivery_mirror_total"
COMPARISONS = "progressive_delivery_comparisons_total"
HOST = "app.example"


def bucket(seed: bytes, key: bytes) -> int:
    """README "Sticky cohorts", over bytes: ids need not be text."""
    return int.from_bytes(hashlib.sha256(seed + b":" + key).digest()[:8], "big") % 10000


def an_id(prefix: bytes, seed: bytes, basis_points: int, inside: bool) -> bytes:
    return next(
        key
        for key in (prefix + str(i).encode() for i in range(10000))
        if (bucket(seed, key) < basis_points) == inside
    )


# The shipped cohort is 5% of `uid` cookies with seed checkout-v2, and a visitor without one is
# given a random one (assign_cookie): edge requests carry an id outside the cohort, so their class
# does not depend on chance.
UID = an_id(b"visitor-", b"checkout-v2", 500, inside=False).decode()
UID_COOKIE = ("cookie", f"uid={UID}")
# Ids that are not UTF-8 are bucketed by their bytes.
RAW_UID_IN = an_id(b"\xff\xfe", b"checkout-v2", 500, inside=True)
RAW_UID_OUT = an_id(b"\xff\xfe", b"checkout-v2", 500, inside=False)
# The inner hop's cohort: half of the x-user-id values.
INNER_SEED = b"inner"
RAW_USER_IN = an_id(b"\xfe\xff", INNER_SEED, 5000, inside=True)
RAW_USER_OUT = an_id(b"\xfe\xff", INNER_SEED, 5000, inside=False)
KB = 1024

# ---------------------------------------------------------------------------------------------
# Upstreams that answer each request differently


class Answers:
    """An upstream's responder: a JSON body of its own for each request (a counter under
    /timestamp, which the shipped comparison ignores, as it does /upstream), kept so the test
    can check the client got exactly the answer the upstream sent."""

    def __init__(self, name: str):
        self.name = name
        self.sent: list[bytes] = []
        self._lock = threading.Lock()

    def __call__(self, req: harness.Received):
        with self._lock:
            body = json.dumps(
                {
                    "upstream": self.name,
                    "timestamp": len(self.sent),
                    "method": req.method,
                    "path": req.path,
                    "class": req.header(CLASS),
                }
            ).encode()
            self.sent.append(body)
        return 200, [("content-type", "application/json")], body

    def last(self) -> bytes | None:
        with self._lock:
            return self.sent[-1] if self.sent else None


# ---------------------------------------------------------------------------------------------
# Sending: raw bytes over HTTP/1, or HTTP/2 frames, so nothing is cleaned up on the way


@dataclass
class Reply:
    status: int | None
    body: bytes
    reset: int | None = None


Header = tuple["str | bytes", "str | bytes"]


def _bytes(v: str | bytes) -> bytes:
    return v if isinstance(v, bytes) else v.encode()


def h1(method: str, path: str | bytes, headers: list[Header], body: bytes = b"", raw_headers: bytes = b""):
    """An HTTP/1.1 request written byte for byte (`raw_headers` goes in as it is, for framing
    tricks such as bare LF or folded lines)."""
    head = b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method.encode(), _bytes(path), HOST.encode())
    head += b"".join(b"%s: %s\r\n" % (_bytes(n), _bytes(v)) for n, v in headers) + raw_headers
    if body:
        head += b"content-length: %d\r\n" % len(body)
    request = head + b"connection: close\r\n\r\n" + body

    def send(e: harness.Envoy) -> Reply:
        r = harness.raw_http1(e.listener_port, request)
        return Reply(None, b"") if r is None else Reply(r.status, r.body)

    return send


def h2(method: str | bytes, path: str | bytes, headers: list[Header], authority: str | bytes = HOST):
    """An HTTP/2 request whose header block is exactly `headers` after the pseudo-headers."""
    block = [(b":method", _bytes(method)), (b":scheme", b"http"), (b":authority", _bytes(authority)), (b":path", _bytes(path))]
    block += [(_bytes(n), _bytes(v)) for n, v in headers]

    def send(e: harness.Envoy) -> Reply:
        r = harness.h2_request(e.listener_port, block)
        return Reply(r.status, r.body, r.reset)

    return send


# ---------------------------------------------------------------------------------------------
# Outcomes


@dataclass
class Reached:
    upstream: str
    cls: str
    decision: str
    # Checks on the request as the upstream received it (e.g. a 60 KB cookie arrived whole).
    check: Callable[[harness.Received], object] | None = None


@dataclass
class Refused:
    """Envoy's HTTP/1 codec answered `status` itself."""

    status: int


@dataclass
class Reset:
    """Envoy's HTTP/2 codec reset the stream (RST_STREAM with this error code)."""

    code: int


@dataclass
class Closed:
    """Envoy's HTTP/2 codec closed the whole connection without a response."""


Outcome = Reached | Refused | Reset | Closed


def cookie_is(value: bytes) -> Callable[[harness.Received], bool]:
    """The upstream received the first Cookie header as sent (Latin-1 keeps every byte)."""
    return lambda got: _bytes(got.header_all("cookie")[0].encode("latin-1")) == value


def path_is(path: bytes) -> Callable[[harness.Received], bool]:
    return lambda got: got.path.encode("latin-1") == path


PAD = b"p" * (60 * KB)  # a 60 KB cookie value: with the rest of the request, over 60 KiB
LONG_PATH = b"/" + b"a" * (60 * KB)
COOKIES_200 = b"; ".join(b"c%d=v%d" % (i, i) for i in range(200))

# (id, Envoy, request, outcome)
CASES: list[tuple[str, str, Callable[[harness.Envoy], Reply], Outcome]] = [
    # A 60 KB Cookie header.
    ("60KB-cookie-default-limits", "defaults", h1("GET", "/", [("cookie", b"pad=" + PAD + b"; type=insider"), UID_COOKIE]), Refused(431)),
    ("60KB-cookie-class-cookie-last", "edge", h1("GET", "/", [("cookie", b"pad=" + PAD + b"; type=insider"), UID_COOKIE]),
     Reached("canary", "insider", "class_excluded", cookie_is(b"pad=" + PAD + b"; type=insider"))),
    ("60KB-cookie-mirrored-whole", "edge", h1("GET", "/big", [("cookie", b"pad=" + PAD), UID_COOKIE]),
     Reached("primary", "stable", "mirrored", cookie_is(b"pad=" + PAD))),
    ("60KB-cookie-h2", "edge", h2("GET", "/", [("cookie", b"pad=" + PAD + b"; type=insider"), UID_COOKIE]),
     Reached("canary", "insider", "class_excluded")),
    ("60KB-cookie-h2-default-limits", "defaults", h2("GET", "/", [("cookie", b"pad=" + PAD + b"; type=insider"), UID_COOKIE]), Reset(2)),
    # 200 cookies.
    ("200-cookies-class-cookie-last", "edge", h1("GET", "/", [("cookie", COOKIES_200 + b"; type=insider"), UID_COOKIE]),
     Reached("canary", "insider", "class_excluded")),
    # The first of two same-named cookies counts (RFC 6265 order), however many come between.
    ("200-cookies-first-of-two-wins", "edge", h1("GET", "/", [("cookie", b"type=outsider; " + COOKIES_200 + b"; type=insider"), UID_COOKIE]),
     Reached("primary", "stable", "mirrored")),
    # Envoy's max_headers_count (100) counts each Cookie line.
    ("200-cookie-headers", "edge", h1("GET", "/", [("cookie", b"c%d=v%d" % (i, i)) for i in range(200)] + [UID_COOKIE]), Refused(431)),
    # HTTP/2 cookie crumbs are headers too; under the limit Envoy joins them into one header.
    ("200-cookie-crumbs-h2", "edge", h2("GET", "/", [("cookie", b"c%d=v%d" % (i, i)) for i in range(200)] + [UID_COOKIE]), Reset(2)),
    ("50-cookie-crumbs-h2-class-cookie-last", "edge", h2("GET", "/", [("cookie", b"c%d=v%d" % (i, i)) for i in range(50)] + [("cookie", "type=insider"), UID_COOKIE]),
     Reached("canary", "insider", "class_excluded")),
    # Malformed cookie pairs: skipped, never an error; RFC 6265 trimming and quotes.
    ("malformed-pairs", "edge", h1("GET", "/", [("cookie", "=; ;;; type; =insider; type==insider; ==; type"), UID_COOKIE]),
     Reached("primary", "stable", "mirrored")),
    ("spaces-tabs-and-quotes", "edge", h1("GET", "/", [("cookie", 'a=1;\t type \t=\t "insider" '), UID_COOKIE]),
     Reached("canary", "insider", "class_excluded")),
    ("unbalanced-quote", "edge", h1("GET", "/", [("cookie", 'type="insider'), UID_COOKIE]), Reached("primary", "stable", "mirrored")),
    ("name-is-a-suffix", "edge", h1("GET", "/", [("cookie", "subtype=insider; typ=insider; type =insider"), UID_COOKIE]),
     Reached("canary", "insider", "class_excluded")),
    ("10k-semicolons", "edge", h1("GET", "/", [("cookie", b";" * 10000 + b"type=insider"), UID_COOKIE]),
     Reached("canary", "insider", "class_excluded")),
    # Non-UTF-8 bytes (obs-text): matched as bytes, never a failure. A copy cannot carry them
    # (the SDK's callout takes text headers): header_not_utf8, and no comparison.
    ("non-utf8-class-cookie", "edge", h1("GET", "/", [("cookie", b"type=\xffinsider"), UID_COOKIE]),
     Reached("primary", "stable", "header_not_utf8", cookie_is(b"type=\xffinsider"))),
    ("non-utf8-uid-in-cohort", "edge", h1("GET", "/", [("cookie", b"uid=" + RAW_UID_IN)]), Reached("primary", "cohort", "class_excluded")),
    ("non-utf8-uid-out-of-cohort", "edge", h1("GET", "/", [("cookie", b"uid=" + RAW_UID_OUT)]), Reached("primary", "stable", "header_not_utf8")),
    ("non-utf8-user-agent", "edge", h1("GET", "/", [("user-agent", b"Mozilla/5.0 Firefox/\xff"), UID_COOKIE]),
     Reached("primary", "stable", "header_not_utf8")),
    ("non-utf8-rule-header", "edge", h1("GET", "/", [("x-beta", b"tr\xffue"), UID_COOKIE]), Reached("primary", "stable", "header_not_utf8")),
    # The client's class and features headers are replaced (or removed) before the copy is
    # made, bytes and all.
    ("non-utf8-class-header", "edge", h1("GET", "/", [(CLASS, b"\xffbeta"), UID_COOKIE]), Reached("primary", "stable", "mirrored")),
    ("non-utf8-features-header", "edge", h1("GET", "/", [("x-features", b"admin\xff"), UID_COOKIE]),
     Reached("primary", "stable", "mirrored", lambda got: got.header_all("x-features") == [])),
    ("non-utf8-class-header-h2", "edge", h2("GET", "/", [(CLASS, b"\xffbeta"), UID_COOKIE]), Reached("primary", "stable", "mirrored")),
    ("non-utf8-cookie-h2", "edge", h2("GET", "/", [("cookie", b"type=insider\xff"), UID_COOKIE]), Reached("primary", "stable", "header_not_utf8")),
    ("non-utf8-path-h2", "edge", h2("GET", b"/caf\xe9?beta\xff", [UID_COOKIE]), Reached("primary", "stable", "header_not_utf8", path_is(b"/caf\xe9?beta\xff"))),
    ("non-utf8-header-name", "edge", h1("GET", "/", [(b"x-\xff", "1"), UID_COOKIE]), Refused(400)),
    ("non-utf8-header-name-h2", "edge", h2("GET", "/", [(b"x-\xff", "1"), UID_COOKIE]), Closed()),
    ("non-utf8-method-h2", "edge", h2(b"G\xffT", "/", [UID_COOKIE]), Closed()),
    ("non-utf8-authority-h2", "edge", h2("GET", "/", [UID_COOKIE], authority=b"app\xff.example"), Closed()),
    ("nul-in-class-header", "edge", h1("GET", "/", [(CLASS, b"beta\x00"), UID_COOKIE]), Refused(400)),
    # Duplicated class headers, commas, line breaks: without trust, all removed and replaced.
    ("two-class-headers", "edge", h1("GET", "/", [(CLASS, "beta"), (CLASS, "insider"), UID_COOKIE]), Reached("primary", "stable", "mirrored")),
    ("two-class-headers-h2", "edge", h2("GET", "/", [(CLASS, "beta"), (CLASS, "insider"), UID_COOKIE]), Reached("primary", "stable", "mirrored")),
    ("class-header-comma-list", "edge", h1("GET", "/", [(CLASS, "beta,insider"), UID_COOKIE]), Reached("primary", "stable", "mirrored")),
    ("class-header-folded-line", "edge", h1("GET", "/", [UID_COOKIE], raw_headers=b"x-user-class: beta\r\n insider\r\n"),
     Reached("primary", "stable", "mirrored")),
    ("class-header-bare-lf", "edge", h1("GET", "/", [UID_COOKIE], raw_headers=b"x-user-class: beta\nx-beta: false\r\n"),
     Reached("primary", "stable", "mirrored")),
    ("class-header-bare-cr", "edge", h1("GET", "/", [UID_COOKIE], raw_headers=b"x-user-class: beta\rinsider\r\n"),
     Reached("primary", "stable", "mirrored")),
    ("class-header-newline-h2", "edge", h2("GET", "/", [(CLASS, "beta\r\ninsider"), UID_COOKIE]), Closed()),
    ("upper-case-header-name-h2", "edge", h2("GET", "/", [("X-User-Class", "beta"), UID_COOKIE]), Closed()),
    # With trust on (inner hop): exactly one class header naming a known class is kept;
    # anything else is ignored and the rules decide (here: no rule holds, so the default).
    ("trusted-class", "inner", h1("GET", "/", [(CLASS, "insider")]), Reached("canary", "insider", "class_excluded")),
    ("trusted-class-padded", "inner", h1("GET", "/", [(CLASS, " \tinsider\t ")]), Reached("canary", "insider", "class_excluded")),
    ("trusted-class-twice", "inner", h1("GET", "/", [(CLASS, "insider"), (CLASS, "insider")]), Reached("primary", "stable", "mirrored")),
    ("trusted-class-twice-h2", "inner", h2("GET", "/", [(CLASS, "insider"), (CLASS, "insider")]), Reached("primary", "stable", "mirrored")),
    ("trusted-class-comma-list", "inner", h1("GET", "/", [(CLASS, "insider,beta")]), Reached("primary", "stable", "mirrored")),
    ("trusted-class-wrong-case", "inner", h1("GET", "/", [(CLASS, "INSIDER")]), Reached("primary", "stable", "mirrored")),
    ("trusted-class-non-utf8", "inner", h1("GET", "/", [(CLASS, b"insider\xff")]), Reached("primary", "stable", "mirrored")),
    ("trusted-class-folded-line", "inner", h1("GET", "/", [], raw_headers=b"x-user-class: insider\r\n beta\r\n"),
     Reached("primary", "stable", "mirrored")),
    # Envoy's HTTP/1 parser ends a header line at a bare LF, so this is one class header
    # `insider` and an x-beta header: what the filter trusts is what Envoy parsed.
    ("trusted-class-bare-lf", "inner", h1("GET", "/", [], raw_headers=b"x-user-class: insider\nx-beta: true\r\n"),
     Reached("canary", "insider", "class_excluded")),
    ("trusted-class-bare-cr", "inner", h1("GET", "/", [], raw_headers=b"x-user-class: insider\rbeta\r\n"),
     Reached("primary", "stable", "mirrored")),
    # The user id used for bucketing, as bytes.
    ("non-utf8-user-id-in-cohort", "inner", h1("GET", "/", [("x-user-id", RAW_USER_IN)]), Reached("primary", "cohort", "class_excluded")),
    ("non-utf8-user-id-out-of-cohort", "inner", h1("GET", "/", [("x-user-id", RAW_USER_OUT)]), Reached("primary", "stable", "header_not_utf8")),
    # A 60 KB value under a regex rule (`.*Firefox/.*`): linear time, whatever the bytes.
    ("60KB-user-agent", "edge", h1("GET", "/", [("user-agent", b"Mozilla/5.0 " + b"Firefox" * (60 * KB // 7)), UID_COOKIE]),
     Reached("primary", "stable", "mirrored")),
    ("60KB-user-agent-match-at-end", "edge", h1("GET", "/", [("user-agent", b"Mozilla/5.0 " + b"F" * (60 * KB) + b" Firefox/120.0"), UID_COOKIE]),
     Reached("primary", "firefox", "mirrored")),
    # Method-override tricks: the server acts on the overriding method, so it must be allowed
    # too; an override never makes a request more mirrorable.
    ("GET-overridden-to-POST", "edge", h1("GET", "/", [("x-http-method-override", "POST"), UID_COOKIE]), Reached("primary", "stable", "not_idempotent")),
    ("POST-overridden-to-GET", "edge", h1("POST", "/", [("x-http-method-override", "GET"), UID_COOKIE], body=b"{}"),
     Reached("primary", "stable", "not_idempotent")),
    ("override-lower-case", "edge", h1("GET", "/", [("X-HTTP-Method-Override", "patch"), UID_COOKIE]), Reached("primary", "stable", "not_idempotent")),
    ("override-comma-list", "edge", h1("GET", "/", [("x-method-override", "GET, POST"), UID_COOKIE]), Reached("primary", "stable", "not_idempotent")),
    ("override-twice", "edge", h1("GET", "/", [("x-http-method", "GET"), ("x-http-method", "DELETE, PATCH"), UID_COOKIE]),
     Reached("primary", "stable", "not_idempotent")),
    ("override-empty", "edge", h1("GET", "/", [("x-http-method-override", ""), UID_COOKIE]), Reached("primary", "stable", "not_idempotent")),
    ("override-non-utf8", "edge", h1("GET", "/", [("x-http-method-override", b"G\xffT"), UID_COOKIE]), Reached("primary", "stable", "not_idempotent")),
    ("override-to-allowed-method", "edge", h1("GET", "/", [("x-http-method", " delete "), UID_COOKIE]), Reached("primary", "stable", "mirrored")),
    ("override-h2", "edge", h2("GET", "/", [("x-http-method-override", "POST"), UID_COOKIE]), Reached("primary", "stable", "not_idempotent")),
    # Absurdly long paths.
    ("70KB-path-default-limits", "defaults", h1("GET", b"/" + b"a" * (70 * KB), [UID_COOKIE]), Refused(431)),
    ("70KB-path-h2-default-limits", "defaults", h2("GET", b"/" + b"a" * (70 * KB), [UID_COOKIE]), Reset(2)),
    ("100KB-path", "edge", h1("GET", b"/" + b"a" * (100 * KB), [UID_COOKIE]), Refused(431)),
    ("60KB-path-mirrored-whole", "edge", h1("GET", LONG_PATH, [UID_COOKIE]), Reached("primary", "stable", "mirrored", path_is(LONG_PATH))),
    ("60KB-path-query-at-end", "edge", h1("GET", LONG_PATH + b"?x=1&beta", [UID_COOKIE]), Reached("canary", "beta", "class_excluded")),
    ("60KB-path-h2", "edge", h2("GET", LONG_PATH, [UID_COOKIE]), Reached("primary", "stable", "mirrored", path_is(LONG_PATH))),
    ("percent-encoded-junk-query", "edge", h1("GET", "/?beta=%ff%00%zz%&&=&%", [UID_COOKIE]), Reached("canary", "beta", "class_excluded")),
]


# ---------------------------------------------------------------------------------------------
# The Envoys


def shipped_like(primary: harness.Upstream, canary: harness.Upstream, *, headers_kb: int | None, inner: bool) -> dict:
    cfg = harness.shipped_config_on({"primary": primary.port, "canary": canary.port})
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    if headers_kb is not None:
        hcm["max_request_headers_kb"] = headers_kb
    if inner:
        [wasm] = [f for f in hcm["http_filters"] if f["name"] == "progressive-delivery"]
        configuration = wasm["typed_config"]["config"]["configuration"]
        plugin = json.loads(configuration["value"])
        classification = plugin["classification"]
        classification["trust_incoming_header"] = True
        [cohort] = [r for r in classification["rules"] if r["class"] == "cohort"]
        cohort["bucket"] = {"header": "x-user-id", "percent": 50, "seed": INNER_SEED.decode()}
        configuration["value"] = json.dumps(plugin)
    return cfg


ENVOYS = {
    "edge": {"headers_kb": 96, "inner": False},
    "defaults": {"headers_kb": None, "inner": False},
    "inner": {"headers_kb": 96, "inner": True},
}


@dataclass
class Running:
    envoy: harness.Envoy
    primary: harness.Upstream
    canary: harness.Upstream
    answers: dict[str, Answers]
    vm_at_start: dict[str, int]

    @property
    def upstreams(self) -> dict[str, harness.Upstream]:
        return {"primary": self.primary, "canary": self.canary}


@pytest.fixture(scope="module")
def running():
    """`running(name)`: the Envoy of ENVOYS[name] with its own primary and canary, started on
    first use and stopped with the module; its log is kept under e2e/.logs/."""
    started: dict[str, Running] = {}

    def get(name: str) -> Running:
        if name not in started:
            answers = {n: Answers(n) for n in ("primary", "canary")}
            primary = harness.Upstream("primary", answers["primary"]).start()
            canary = harness.Upstream("canary", answers["canary"]).start()
            e = harness.Envoy(shipped_like(primary, canary, **ENVOYS[name]))
            started[name] = Running(e, primary, canary, answers, {})
            e.start()
            started[name].vm_at_start = harness.vm_failure_stats(e)
        return started[name]

    yield get
    for name, r in started.items():
        r.envoy.stop()
        r.primary.stop()
        r.canary.stop()
        harness.LOG_DIR.mkdir(exist_ok=True)
        (harness.LOG_DIR / f"test_hostile-{name}.log").write_text(r.envoy.log())


@pytest.fixture
def on_failure_show_logs(request, running):
    """Prints the tail of every module Envoy's log when the test using it fails."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for name in ENVOYS:
            log = running(name).envoy.log()
            sys.stderr.write(f"\n===== envoy log ({name}), last 8000 characters =====\n{log[-8000:]}\n")


def filter_counts(e: harness.Envoy) -> tuple[dict[str, float], dict[str, float]]:
    """Requests classified per class, and mirror decisions, so far."""
    text = e.prometheus()
    per_class = {l.get("user_class", ""): v for l, v in harness.prometheus_samples(text, REQUESTS_TOTAL) if v}
    decisions: dict[str, float] = {}
    for labels, value in harness.prometheus_samples(text, MIRROR_TOTAL):
        if value:
            decisions[labels["decision"]] = decisions.get(labels["decision"], 0) + value
    return per_class, decisions


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after) if after.get(k, 0) != before.get(k, 0)}


def comparisons(e: harness.Envoy) -> dict[str, float]:
    return harness.counts_by(e, COMPARISONS, "result")


def assert_vm_alive(r: Running) -> None:
    assert harness.trap_lines(r.envoy) == []
    assert harness.vm_failure_stats(r.envoy) == r.vm_at_start


@pytest.mark.usefixtures("on_failure_show_logs")
@pytest.mark.parametrize("name,where,send,outcome", CASES, ids=[c[0] for c in CASES])
def test_hostile_request(running, name, where, send, outcome):
    r = running(where)
    e = r.envoy
    # Whatever a failed case before left behind is not this case's.
    r.primary.take()
    r.canary.take()
    classes_before, decisions_before = filter_counts(e)
    compared_before = comparisons(e)
    answered_before = {n: a.last() for n, a in r.answers.items()}

    reply = send(e)

    if not isinstance(outcome, Reached):
        want = {
            # Envoy's own answer: its reason phrase as the body, not anything an upstream sent.
            Refused: lambda o: Reply(o.status, HTTPStatus(o.status).phrase.encode()),
            Reset: lambda o: Reply(None, b"", o.code),
            Closed: lambda o: Reply(None, b""),
        }[type(outcome)](outcome)
        assert reply == want
        assert {n: a.last() for n, a in r.answers.items()} == answered_before
        # Turned away before any filter: nothing reached an upstream or was counted.
        assert [u.take() for u in r.upstreams.values()] == [[], []]
        assert filter_counts(e) == (classes_before, decisions_before)
        assert_vm_alive(r)
        return

    # The client gets the answer of the upstream the route picked, byte for byte.
    answer = r.answers[outcome.upstream].last()
    assert answer != answered_before[outcome.upstream]
    assert (reply.status, reply.body) == (200, answer)
    [got] = r.upstreams[outcome.upstream].take()
    assert got.header_all(CLASS) == [outcome.cls], got.headers
    if outcome.check is not None:
        assert outcome.check(got), got
    assert got.header("x-mirror") is None

    want_decisions = {outcome.decision: 1}
    harness.wait_until(
        lambda: moved(decisions_before, filter_counts(e)[1]) == want_decisions,
        what=f"decision {outcome.decision}, got {moved(decisions_before, filter_counts(e)[1])}",
    )
    assert moved(classes_before, filter_counts(e)[0]) == {outcome.cls: 1}
    other = "canary" if outcome.upstream == "primary" else "primary"
    if outcome.decision == "mirrored":
        # A faithful copy: same method, path, class; the two answers compare equal.
        harness.wait_until(lambda: r.canary.received, what="the copy at the canary")
        [copy] = r.canary.take()
        assert (copy.method, copy.path, copy.header_all(CLASS), copy.header("x-mirror")) == (got.method, got.path, [outcome.cls], "1")
        if outcome.check is not None:
            assert outcome.check(copy), copy
        harness.wait_until(lambda: moved(compared_before, comparisons(e)) == {"match": 1}, what=f"a match, got {moved(compared_before, comparisons(e))}")
    else:
        # Decided on the request headers, before the client had its answer: no copy comes.
        assert r.upstreams[other].take() == []
        assert comparisons(e) == compared_before
    assert_vm_alive(r)


@pytest.mark.usefixtures("on_failure_show_logs")
@pytest.mark.parametrize("where", ENVOYS)
def test_still_classifying_and_mirroring_after_the_hostile_requests(running, where):
    r = running(where)
    e = r.envoy
    headers = [("x-user-id", "someone")] if ENVOYS[where]["inner"] else [UID_COOKIE]
    classes_before, _ = filter_counts(e)
    reply = h1("GET", "/after", headers + [("user-agent", "Mozilla/5.0 Firefox/120.0"), (CLASS, "insider,beta")])(e)
    assert (reply.status, reply.body) == (200, r.answers["primary"].last())
    [got] = r.primary.take()
    assert got.header_all(CLASS) == ["firefox"]
    harness.wait_until(lambda: r.canary.received, what="the copy at the canary")
    assert [c.header_all(CLASS) for c in r.canary.take()] == [["firefox"]]
    assert moved(classes_before, filter_counts(e)[0]) == {"firefox": 1}
    # Every request either side of this module's cases ran in the VMs Envoy started with.
    assert_vm_alive(r)
    assert not re.search(r"\[(critical|error)\]\[wasm\]", e.log())
