"""User-class classification in a real Envoy: each kind of rule sends the request to the right
upstream with the right x-user-class and x-features, a client cannot pick its own class, and the
per-class counter shows on /stats/prometheus."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

import harness

EXAMPLE = {
    "classification": {
        "header": "x-user-class",
        "default_class": "stable",
        "trust_incoming_header": False,
        "rules": [
            {"class": "insider", "cookie": {"name": "type", "exact": "insider"}},
            {"class": "beta", "header": {"name": "x-beta", "exact": "true"}},
            {"class": "firefox", "header": {"name": "user-agent", "regex": ".*Firefox.*"}},
            {"class": "preview", "query": {"name": "preview", "present": True}},
            {"class": "cohort", "bucket": {"cookie": "uid", "percent": 5, "seed": "checkout-v2"}},
        ],
        "features_header": "x-features",
        "features": {"beta": ["new-checkout", "dark-mode"]},
    }
}

TO_CANARY = {"beta": "canary", "insider": "canary", "cohort": "canary"}


bucket_of = harness.bucket


def ids(seed: str, basis_points: int, inside: bool, n: int) -> list[str]:
    out = []
    i = 0
    while len(out) < n:
        uid = f"visitor-{i}"
        if (bucket_of(seed, uid) < basis_points) == inside:
            out.append(uid)
        i += 1
    return out


@pytest.fixture
def example(envoy, primary_and_canary):
    e = envoy(harness.classifying_envoy_config(EXAMPLE, primary_and_canary, TO_CANARY, "primary"))
    return e, primary_and_canary


IN_COHORT = ids("checkout-v2", 500, True, 1)[0]
OUT_OF_COHORT = ids("checkout-v2", 500, False, 1)[0]
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"

CASES = [
    # (what, path, headers, upstream, class, features)
    ("no hint", "/", [], "primary", "stable", None),
    ("insider cookie", "/", [("cookie", "a=1; type=insider; b=2")], "canary", "insider", None),
    ("insider cookie, second Cookie header", "/", [("cookie", "a=1"), ("cookie", "type=insider")], "canary", "insider", None),
    ("cookie name is a suffix only", "/", [("cookie", "subtype=insider")], "primary", "stable", None),
    ("beta header", "/", [("x-beta", "true")], "canary", "beta", "new-checkout,dark-mode"),
    ("firefox regex", "/", [("user-agent", FIREFOX)], "primary", "firefox", None),
    ("preview query", "/shop?a=1&preview", [], "primary", "preview", None),
    ("cohort, in 5%", "/", [("cookie", f"uid={IN_COHORT}")], "canary", "cohort", None),
    ("cohort, not in 5%", "/", [("cookie", f"uid={OUT_OF_COHORT}")], "primary", "stable", None),
    ("rule order: insider before beta", "/", [("cookie", "type=insider"), ("x-beta", "true")], "canary", "insider", None),
    ("spoofed class", "/", [("x-user-class", "beta")], "primary", "stable", None),
    ("spoofed class twice", "/", [("x-user-class", "beta"), ("x-user-class", "insider")], "primary", "stable", None),
    ("spoofed features", "/", [("x-features", "admin-mode")], "primary", "stable", None),
    ("spoofed features on beta", "/", [("x-beta", "true"), ("x-features", "admin-mode")], "canary", "beta", "new-checkout,dark-mode"),
]


@pytest.mark.parametrize("what,path,headers,where,cls,features", CASES, ids=[c[0] for c in CASES])
def test_classification_reaches_the_right_upstream(example, what, path, headers, where, cls, features):
    e, ups = example
    r = e.request("GET", path, headers)
    assert r.status == 200, r.body
    assert r.json()["upstream"] == where
    other = "canary" if where == "primary" else "primary"
    assert ups[other].take() == []
    [got] = ups[where].take()
    assert got.path == path
    assert got.header_all("x-user-class") == [cls]
    assert got.header_all("x-features") == ([features] if features else [])


def test_requests_counted_per_class(example):
    e, _ = example
    sends = [[("x-beta", "true")]] * 3 + [[("cookie", "type=insider")]] * 2 + [[("x-user-class", "beta")]] * 4
    for headers in sends:
        assert e.request("GET", "/", headers).status == 200
    text = e.prometheus()
    want = {"beta": 3, "insider": 2, "stable": 4, "firefox": 0, "preview": 0, "cohort": 0}
    for cls, n in want.items():
        got = harness.prometheus_value(text, "progressive_delivery_requests_total", {"user_class": cls})
        assert got == n, f"{cls}: {got}\n{text}"
    assert "# TYPE progressive_delivery_requests_total counter" in text


def test_bucket_matches_documented_formula_for_many_ids(example):
    """40 ids on each side of the 5% line, chosen with Python's hashlib: the filter agrees."""
    e, ups = example
    for uid, want in [(u, "cohort") for u in ids("checkout-v2", 500, True, 40)] + [
        (u, "stable") for u in ids("checkout-v2", 500, False, 40)
    ]:
        r = e.request("GET", "/", [("cookie", f"uid={uid}")])
        assert r.json()["x-user-class"] == want, uid


def test_assign_cookie_makes_first_visit_sticky(envoy, primary_and_canary):
    config = {
        "classification": {
            "rules": [
                {
                    "class": "half",
                    "bucket": {"cookie": "uid", "percent": 50, "seed": "s", "assign_cookie": True},
                }
            ]
        }
    }
    e = envoy(harness.classifying_envoy_config(config, primary_and_canary, {"half": "canary"}, "primary"))
    seen = set()
    for _ in range(30):
        r = e.request("GET", "/")
        [cookie] = r.header_all("set-cookie")
        m = re.fullmatch(r"uid=([0-9a-f]{32}); Path=/; Max-Age=31536000; SameSite=Lax", cookie)
        assert m, cookie
        uid = m.group(1)
        seen.add(uid)
        want = "half" if bucket_of("s", uid) < 5000 else "stable"
        # The first request is already bucketed by the id it is being given...
        assert r.json()["x-user-class"] == want, uid
        # ...and coming back with it gives the same class and no new cookie.
        again = e.request("GET", "/", [("cookie", f"uid={uid}")])
        assert again.header_all("set-cookie") == []
        assert again.json()["x-user-class"] == want
    assert len(seen) == 30, "ids must be random"


def test_trusted_incoming_class_on_inner_hops(envoy, primary_and_canary):
    config = {"classification": {**EXAMPLE["classification"], "trust_incoming_header": True}}
    e = envoy(harness.classifying_envoy_config(config, primary_and_canary, TO_CANARY, "primary"))
    cases = [
        ([("x-user-class", "beta")], "canary", "beta", "new-checkout,dark-mode"),
        ([("x-user-class", "stable"), ("x-beta", "true")], "primary", "stable", None),
        # Not a class this config knows: classified by the rules instead.
        ([("x-user-class", "admin"), ("x-beta", "true")], "canary", "beta", "new-checkout,dark-mode"),
        ([("x-user-class", "admin")], "primary", "stable", None),
        # Already as the filter would write them: nothing is written, the route stands.
        ([("x-user-class", "beta"), ("x-features", "new-checkout,dark-mode")], "canary", "beta", "new-checkout,dark-mode"),
        ([("x-user-class", "stable")], "primary", "stable", None),
    ]
    for headers, where, cls, features in cases:
        r = e.request("GET", "/", headers).json()
        assert (r["upstream"], r["x-user-class"], r["x-features"]) == (where, cls, features), headers


@pytest.mark.parametrize("plugin_config", [None, "", "{}"], ids=["absent", "empty", "empty-object"])
def test_empty_config_classifies_everyone_stable(envoy, primary_and_canary, plugin_config):
    e = envoy(harness.classifying_envoy_config(plugin_config, primary_and_canary, {"beta": "canary"}, "primary"))
    r = e.request("GET", "/", [("x-user-class", "beta"), ("x-features", "x")]).json()
    assert (r["upstream"], r["x-user-class"], r["x-features"]) == ("primary", "stable", None)


def test_non_utf8_and_odd_headers_have_defined_outcomes(example):
    e, ups = example
    cases = [
        [("cookie", b"type=\xffinsider; uid=\xfe")],
        [("user-agent", b"Firefox\xff")],
        [("x-beta", b"tr\xffue")],
        [("cookie", "=; ;;; type")],
    ]
    for headers in cases:
        r = e.request("GET", "/", headers)
        assert r.status == 200, headers
        assert r.json()["x-user-class"] == "stable", headers
    # The VM is still alive and classifying.
    assert e.request("GET", "/", [("x-beta", "true")]).json()["x-user-class"] == "beta"


@pytest.mark.parametrize("level,logged", [("debug", True), ("info", False)])
def test_decision_logged_at_debug_only(envoy, primary_and_canary, level, logged):
    """The filter follows Envoy's log level: the per-request line costs nothing at info."""
    e = envoy(
        harness.classifying_envoy_config(EXAMPLE, primary_and_canary, TO_CANARY, "primary"),
        log_level=level,
    )
    e.request("GET", "/", [("x-beta", "true")])
    assert ("class beta (Rule(1))" in e.log()) == logged


def curl_h2(e: harness.Envoy, path: str, headers: list[tuple[str, str]]) -> dict:
    """A request over HTTP/2 (h2c, prior knowledge): HTTP/2 may split Cookie into crumbs."""
    args = ["curl", "-sS", "--fail", "--http2-prior-knowledge", f"http://127.0.0.1:{e.listener_port}{path}"]
    for n, v in headers:
        args += ["-H", f"{n}: {v}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=10, check=True)
    return json.loads(out.stdout)


def test_http2_requests_are_classified(example):
    e, _ = example
    cases = [
        ([("cookie", "a=1"), ("cookie", "type=insider")], "canary", "insider"),
        ([("x-beta", "true")], "canary", "beta"),
        ([("x-user-class", "beta")], "primary", "stable"),
        ([("cookie", f"uid={IN_COHORT}; x=y")], "canary", "cohort"),
    ]
    for headers, where, cls in cases:
        r = curl_h2(e, "/h2", headers)
        assert (r["upstream"], r["x-user-class"]) == (where, cls), headers


# Writes the class header as a native filter, without asking for the route again.
WRITE_BETA = {
    "name": "envoy.filters.http.header_mutation",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {
            "request_mutations": [
                {"append": {"header": {"key": "x-user-class", "value": "beta"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}
            ]
        },
    },
}


def test_route_is_picked_before_filters_run(envoy, primary_and_canary):
    """Why the filter re-picks the route: a header a filter writes is seen by the upstream but
    not by the route, which Envoy picked before the filters ran."""
    cfg = harness.classifying_envoy_config(None, primary_and_canary, TO_CANARY, "primary")
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [WRITE_BETA, harness.ROUTER]
    r = envoy(cfg).request("GET", "/", []).json()
    assert (r["upstream"], r["x-user-class"]) == ("primary", "beta")


@pytest.mark.parametrize("reroute", [True, False], ids=["reroute", "no-reroute"])
def test_routes_see_the_class_with_or_without_reroute(envoy, primary_and_canary, reroute):
    """`reroute: false` leaves out the filter's `clear_route_cache`, and on this Envoy a route on
    the class header still sees the class: its Wasm host picks the route again by itself when a
    filter writes a request header, which the native filter above does not get. On a host
    that does not, `reroute: true` is what makes the route see it (docs/configuration.md)."""
    config = {"classification": {**EXAMPLE["classification"], "reroute": reroute}}
    e = envoy(harness.classifying_envoy_config(config, primary_and_canary, TO_CANARY, "primary"))
    for headers, where, cls in [([("x-beta", "true")], "canary", "beta"), ([], "primary", "stable")]:
        r = e.request("GET", "/", headers).json()
        assert (r["upstream"], r["x-user-class"]) == (where, cls), headers
