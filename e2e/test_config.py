"""Configuration in a real Envoy: a bad plugin config makes Envoy refuse it with a log line that
names the field, and the shipped envoy.yaml validates and works as documented."""

from __future__ import annotations

import json

import pytest

import harness

BAD_CONFIGS = [
    ("invalid-json", '{"classification": {', "config: invalid JSON: EOF while parsing an object at line 1 column 20"),
    (
        "unknown-field",
        {"classification": {"rules": [{"class": "b", "cookie": {"name": "t", "exat": "x"}}]}},
        "classification.rules[0].cookie.exat: unknown field `exat`, expected one of `name`, `exact`",
    ),
    (
        "percent",
        {"classification": {"rules": [{"class": "c", "bucket": {"cookie": "uid", "percent": 120}}]}},
        "classification.rules[0].bucket.percent: 120 is not between 0 and 100",
    ),
    (
        "regex",
        {"classification": {"rules": [{"class": "f", "header": {"name": "user-agent", "regex": "(Firefox"}}]}},
        'classification.rules[0].header.regex: "(Firefox" is not a valid regex',
    ),
    (
        "no-condition",
        {"classification": {"rules": [{"class": "beta"}]}},
        'classification.rules[0]: rule for class "beta" has no condition',
    ),
    (
        "header-name",
        {"classification": {"header": "x user class"}},
        'classification.header: "x user class" is not a valid HTTP header name',
    ),
]


@pytest.mark.parametrize("what,config,message", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_envoy_refuses_bad_plugin_config(primary_and_canary, what, config, message):
    cfg = harness.classifying_envoy_config(config, primary_and_canary, {}, "primary")
    e = harness.Envoy(cfg)
    try:
        with pytest.raises(harness.EnvoyExited) as exited:
            e.start()
    finally:
        e.stop()
    log = exited.value.log
    assert exited.value.returncode != 0
    assert f"invalid configuration: {message}" in log, log
    # Envoy says in its own words that it would not take the filter.
    assert "Unable to create Wasm plugin progressive-delivery" in log, log


def test_shipped_envoy_yaml_validates():
    r = harness.run_envoy_validate(harness.SHIPPED_ENVOY_YAML)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "envoy.yaml' OK" in r.stdout + r.stderr


def test_shipped_envoy_yaml_routes_classes(envoy, upstream):
    """envoy.yaml as `make run` uses it, on free ports instead of 8081/8082/10000/9901."""
    primary, canary = upstream("primary"), upstream("canary")
    e = envoy(harness.shipped_config_on({"primary": primary.port, "canary": canary.port}))

    cases = [
        ([], "primary", "stable"),
        ([("x-beta", "true")], "canary", "beta"),
        ([("cookie", "type=insider")], "canary", "insider"),
        ([("user-agent", "Mozilla/5.0 Firefox/120.0")], "primary", "firefox"),
        ([("x-user-class", "insider")], "primary", "stable"),
    ]
    for headers, where, cls in cases:
        r = e.request("GET", "/", headers + [("cookie", "uid=known-visitor")])
        body = r.json()
        assert (body["upstream"], body["x-user-class"]) == (where, cls), headers
    e.request("GET", "/?beta")
    text = e.prometheus()
    for cls, n in {"stable": 2, "beta": 2, "insider": 1, "firefox": 1, "cohort": 0}.items():
        assert harness.prometheus_value(text, "progressive_delivery_requests_total", {"user_class": cls}) == n, text
