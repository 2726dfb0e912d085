"""Manifests checked against the Istio and Flagger CRDs (e2e/crd_schema.py): the manifests under
istio/ are valid, and for each kind shipped there a copy with an unknown field, a value of the
wrong type or a value a CEL rule refuses is caught, with the error naming the field."""

from __future__ import annotations

import copy
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import celpy
import pytest
import yaml

import crd_schema

REPO = Path(__file__).resolve().parent.parent
ISTIO = REPO / "istio"

# The kinds this project ships, each with the file it ships it in.
SHIPPED = {
    "WasmPlugin": "wasmplugin-gateway.yaml",
    "VirtualService": "routing/virtualservice.yaml",
    "DestinationRule": "routing/destinationrule.yaml",
    "Canary": "flagger/canary.yaml",
    "MetricTemplate": "flagger/metrictemplate.yaml",
}
DELETE = object()


def changed(kind: str, changes: dict) -> dict:
    """The shipped document of `kind` with values set at dotted paths (list indices as numbers;
    DELETE removes the key)."""
    [doc] = crd_schema.load_documents((ISTIO / SHIPPED[kind]).read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        key = int(last) if isinstance(node, list) else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = copy.deepcopy(value)
    return doc


DURATION = "must be a valid duration greater than 1ms"

# (id, kind, changes, every error it must give)
CASES = [
    # Unknown fields: strict field validation.
    ("wasmplugin-unknown", "WasmPlugin", {"spec.selector.matchLabel": {"app": "api"}},
     ["spec.selector: Additional properties are not allowed ('matchLabel' was unexpected)"]),
    ("virtualservice-unknown", "VirtualService", {"spec.http.0.timout": "1s"},
     ["spec.http[0]: Additional properties are not allowed ('timout' was unexpected)"]),
    ("destinationrule-unknown", "DestinationRule", {"spec.subsets.0.label": {"version": "stable"}},
     ["spec.subsets[0]: Additional properties are not allowed ('label' was unexpected)"]),
    ("canary-unknown", "Canary", {"spec.analysis.iteration": 10},
     ["spec.analysis: Additional properties are not allowed ('iteration' was unexpected)"]),
    ("metrictemplate-unknown", "MetricTemplate", {"spec.provider.adress": "http://p:9090"},
     ["spec.provider: Additional properties are not allowed ('adress' was unexpected)"]),
    ("unknown-at-top", "WasmPlugin", {"labels": {"app": "api"}}, ["document: Additional properties are not allowed ('labels' was unexpected)"]),
    ("unknown-in-metadata", "WasmPlugin", {"metadata.lables": {"a": "b"}},
     ["metadata: Additional properties are not allowed ('lables' was unexpected)"]),
    # Wrong types.
    ("wasmplugin-type", "WasmPlugin", {"spec.priority": "10"}, ["spec.priority: '10' is not of type 'integer'"]),
    ("virtualservice-type", "VirtualService", {"spec.gateways": "mesh"}, ["spec.gateways: 'mesh' is not of type 'array'"]),
    ("destinationrule-type", "DestinationRule", {"spec.host": 8080}, ["spec.host: 8080 is not of type 'string'"]),
    ("canary-type", "Canary", {"spec.service.port": "8080"}, ["spec.service.port: '8080' is not of type 'number'"]),
    ("metrictemplate-type", "MetricTemplate", {"spec.query": ["up"]}, ["spec.query: ['up'] is not of type 'string'"]),
    ("int-or-string", "Canary", {"spec.service.targetPort": True},
     ["spec.service.targetPort: True is not of type 'integer', 'string'"]),
    # A wrong type is reported once: the rule on that field does not run on it.
    ("rule-not-run-on-wrong-type", "VirtualService", {"spec.http.0.timeout": 10}, ["spec.http[0].timeout: 10 is not of type 'string'"]),
    # CEL rules, one per kind whose CRD has any (MetricTemplate's has none).
    ("wasmplugin-rule-url", "WasmPlugin", {"spec.url": "ftp://example.com/filter.wasm"},
     ["spec.url: fails rule: url must have schema one of [http, https, file, oci]"]),
    ("wasmplugin-rule-one-target", "WasmPlugin", {"spec.targetRefs": [{"kind": "Service", "name": "api"}]},
     ["spec: fails rule: only one of targetRefs or selector can be set"]),
    ("virtualservice-rule", "VirtualService", {"spec.http.0.timeout": "0s"}, [f"spec.http[0].timeout: fails rule: {DURATION}"]),
    ("virtualservice-rule-ns", "VirtualService", {"spec.http.1.retries.perTryTimeout": "999999ns"},
     [f"spec.http[1].retries.perTryTimeout: fails rule: {DURATION}"]),
    ("virtualservice-rule-go-units", "VirtualService", {"spec.http.0.timeout": "1d"},
     [f'spec.http[0].timeout: rule could not be evaluated ({DURATION}): time: invalid duration "1d"']),
    ("destinationrule-rule", "DestinationRule", {"spec.workloadSelector": {"matchLabels": {"app*": "api"}}},
     ["spec.workloadSelector.matchLabels: fails rule: wildcard not allowed in label key match"]),
    # The rule sees backendRef's schema defaults (group "", kind Service), as on the server.
    ("canary-rule-with-defaults", "Canary", {"spec.service.mirror": [{"backendRef": {"name": "api-shadow"}}]},
     ["spec.service.mirror[0].backendRef: fails rule: Must have port for Service reference"]),
    # Other structure.
    ("required", "DestinationRule", {"spec.host": DELETE}, ["spec: 'host' is a required property"]),
    ("list-map-keys-unique", "WasmPlugin", {"spec.match": [{"ports": [{"number": 8080}, {"number": 8080}]}]},
     ["spec.match[0].ports: duplicate entry with {'number': 8080}"]),
    ("metadata-name", "WasmPlugin", {"metadata.name": "Progressive_Delivery"},
     ["metadata.name: 'Progressive_Delivery' does not match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'"]),
    ("metadata-label-value", "WasmPlugin", {"metadata.labels": {"version": 2}}, ["metadata.labels.version: 2 is not of type 'string'"]),
    ("api-version", "WasmPlugin", {"apiVersion": "extensions.istio.io/v1"},
     ["apiVersion: 'extensions.istio.io/v1' does not serve WasmPlugin; served: extensions.istio.io/v1alpha1"]),
    # Valid changes stay valid.
    ("bare-image-reference", "WasmPlugin", {"spec.url": "ghcr.io/example/progressive-delivery:v1"}, []),
    ("preserve-unknown-fields", "WasmPlugin", {"spec.pluginConfig.anything": {"goes": [1]}}, []),
    ("int-or-string-string", "Canary", {"spec.service.targetPort": "http"}, []),
    ("integral-float-is-an-integer", "WasmPlugin", {"spec.priority": 10.0}, []),
]


@pytest.mark.parametrize("what,kind,changes,errors", CASES, ids=[c[0] for c in CASES])
def test_document_errors(what, kind, changes, errors):
    assert crd_schema.validate(changed(kind, changes)) == errors


def crd_rules(kind: str) -> list[str]:
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            found.extend(r["rule"] for r in node.get("x-kubernetes-validations", []))
            list(map(walk, node.values()))
        elif isinstance(node, list):
            list(map(walk, node))

    walk(crd_schema.default_schemas().crds[kind]["versions"])
    return found


def test_every_shipped_kind_has_its_three_cases():
    """An unknown field, a wrong type, and a failing CEL rule for each kind whose CRD has one."""
    for kind in SHIPPED:
        covered = {c[0].split("-")[1] for c in CASES if c[1] == kind and c[0].startswith(kind.lower() + "-")}
        want = {"unknown", "type"} | ({"rule"} if crd_rules(kind) else set())
        assert covered >= want, kind


def test_every_crd_rule_compiles():
    rules = {r for kind in crd_schema.default_schemas().crds for r in crd_rules(kind)}
    assert len(rules) >= 20
    for rule in rules:
        crd_schema.cel_program(rule)


URLS = [
    # (value, isURL, scheme) as Go's url.ParseRequestURI decides them
    ("oci://registry.example.com/progressive-delivery:0.1.0", True, "oci"),
    ("HTTPS://user:pass@example.com/", True, "https"),
    ("/absolute-path", True, ""),
    ("ghcr.io/example/filter:v1", False, None),
    ("http://host:port/", False, None),
    ("https://exa mple.com/", False, None),
]


@pytest.mark.parametrize("value,is_url,scheme", URLS, ids=[u[0] for u in URLS])
def test_kubernetes_url_functions(value, is_url, scheme):
    assert crd_schema.cel_program(f"isURL({value!r})").evaluate({}) == is_url
    if scheme is not None:
        assert crd_schema.cel_program(f"url({value!r}).getScheme()").evaluate({}) == scheme


DURATIONS = [
    # (text, nanoseconds as Go's time.ParseDuration reads it, or None for an error)
    ("0", 0), ("-0", 0), ("+5s", 5 * 10**9), ("-5s", -5 * 10**9), ("5.s", 5 * 10**9), (".5s", 5 * 10**8),
    ("1h2m3s4ms5us6ns", 3_723_004_005_006), ("12µs", 12_000), ("-2m3.4s", -123_400_000_000), ("999999ns", 999_999),
    ("", None), ("3", None), (".s", None), ("1d", None), ("1h 30m", None), ("+-5s", None),
]  # fmt: skip


@pytest.mark.parametrize("text,ns", DURATIONS, ids=[d[0] or "empty" for d in DURATIONS])
def test_duration_is_gos(text, ns):
    program = crd_schema.cel_program(f"duration({text!r})")
    if ns is None:
        with pytest.raises(celpy.CELEvalError, match=re.escape(f'time: invalid duration "{text}"')):
            program.evaluate({})
    else:
        assert program.evaluate({}) == ns


def test_yaml_is_decoded_strictly():
    assert crd_schema.load_documents("a: 2024-01-01\n---\n---\nb: 1\n") == [{"a": "2024-01-01"}, {"b": 1}]
    with pytest.raises(yaml.YAMLError, match="duplicate key 'url'"):
        crd_schema.load_documents("spec:\n  url: a\n  url: b\n")


def test_kind_without_crd_is_not_checked():
    for doc in ({"apiVersion": "v1", "kind": "Service"}, {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator"}):
        with pytest.raises(crd_schema.NoSchema):
            crd_schema.validate(doc)


def test_schemas_are_the_upstream_files_listed_in_their_readme():
    readme = (REPO / "e2e" / "schemas" / "README.md").read_text()
    listed = dict(reversed(line.split()) for line in re.findall(r"^[0-9a-f]{64}  \S+$", readme, re.M))
    assert listed == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in crd_schema.SCHEMA_FILES}


# ---------------------------------------------------------------------------------------------
# The manifests this project ships, and the command line


def assert_manifests_valid(root: Path) -> None:
    """Every document under `root` is valid, and each kind the project ships is among them."""
    checked = [(f, *c) for f in crd_schema.manifest_files(root) for c in crd_schema.check_file(f)]
    problems = [f"{f}: {label}: {e}" for f, label, _, errors in checked for e in errors or []]
    missing = set(SHIPPED) - {kind for _, _, kind, _ in checked}
    assert not problems and not missing, (problems, missing)


def test_istio_manifests_match_schemas():
    """The manifests under istio/ (or under $PD_MANIFESTS, to check another tree such as the
    pinned copies `make istio-manifests` writes)."""
    assert_manifests_valid(Path(os.environ.get("PD_MANIFESTS", ISTIO)))


def test_cli_reports_each_document(tmp_path):
    (tmp_path / "sub").mkdir()
    good, bad = tmp_path / "sub" / "good.yaml", tmp_path / "bad.yml"
    good.write_text((ISTIO / SHIPPED["Canary"]).read_text() + "---\napiVersion: v1\nkind: Service\nmetadata: {name: api}\n")
    bad.write_text(yaml.safe_dump(changed("MetricTemplate", {"spec.query": 1})))
    run = lambda *paths: subprocess.run(  # noqa: E731
        [sys.executable, str(REPO / "e2e" / "crd_schema.py"), *map(str, paths)], capture_output=True, text=True, timeout=60
    )
    r = run(good)
    assert (r.returncode, r.stdout.splitlines()) == (0, [
        f"{good}: Canary/api: ok",
        f"{good}: Service/api: not checked (no schema)",
        "2 documents in 1 files: 1 ok, 1 not checked (no schema), 0 with errors",
    ])
    r = run(tmp_path)
    assert (r.returncode, r.stdout.splitlines()[0], r.stdout.splitlines()[-1]) == (
        1,
        f"{bad}: MetricTemplate/canary-mismatch-ratio: spec.query: 1 is not of type 'string'",
        "3 documents in 2 files: 1 ok, 1 not checked (no schema), 1 with errors",
    )
