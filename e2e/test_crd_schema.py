"""Manifests checked against the Istio and Flagger CRDs (e2e/crd_schema.py): valid examples pass,
each kind of mistake gives its exact error, every CEL rule in the CRDs can be evaluated, and the
manifests under istio/ are valid."""

from __future__ import annotations

import collections
import copy
import hashlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import crd_schema
import k8s_cel

REPO = Path(__file__).resolve().parent.parent

# Examples from the Istio and Flagger documentation, plus the shapes this project ships (a
# WasmPlugin from an OCI image, targetRefs, vmConfig). ServiceEntry and EnvoyFilter are not
# shipped; they are here so that every rule of the CRDs is evaluated by some document.
EXAMPLES = {
    "wasmplugin-docs": """
        apiVersion: extensions.istio.io/v1alpha1
        kind: WasmPlugin
        metadata:
          name: openid-connect
          namespace: istio-ingress
        spec:
          selector:
            matchLabels:
              istio: ingressgateway
          url: file:///opt/filters/openid.wasm
          sha256: 1ef0c9a92b0420cf25f7fe5d481b231464bc88f486ca3b9c83ed5cc21d2f6210
          phase: AUTHN
          pluginConfig:
            openid_server: authn
            openid_realm: ingress
    """,
    "wasmplugin-oci": """
        apiVersion: extensions.istio.io/v1alpha1
        kind: WasmPlugin
        metadata:
          name: progressive-delivery
          namespace: shop
          labels:
            app.kubernetes.io/name: progressive-delivery
          annotations:
            example.com/owner: platform team
        spec:
          targetRefs:
          - kind: Service
            group: ""
            name: storefront
            namespace: ""
          url: oci://ghcr.io/example/progressive-delivery:v1
          imagePullPolicy: IfNotPresent
          imagePullSecret: registry-credentials
          failStrategy: FAIL_OPEN
          phase: STATS
          priority: 10
          type: HTTP
          match:
          - mode: SERVER
            ports:
            - number: 8080
            - number: 8443
          vmConfig:
            env:
            - name: POD_NAME
              valueFrom: HOST
            - name: TIER
              value: canary
          pluginConfig:
            classification:
              header: x-user-class
              rules:
              - class: beta
                header: {name: x-beta, exact: "true"}
    """,
    "virtualservice-docs": """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: ratings
        spec:
          hosts:
          - ratings.prod.svc.cluster.local
          http:
          - match:
            - headers:
                end-user:
                  exact: jason
              uri:
                prefix: /ratings
            route:
            - destination:
                host: ratings.prod.svc.cluster.local
                subset: v2
            fault:
              delay:
                percentage:
                  value: 0.1
                fixedDelay: 5s
          - route:
            - destination:
                host: ratings.prod.svc.cluster.local
                subset: v1
                port:
                  number: 9080
              weight: 90
            - destination:
                host: ratings.prod.svc.cluster.local
                subset: v2
              weight: 10
            retries:
              attempts: 3
              perTryTimeout: 2s
              retryOn: gateway-error,connect-failure,refused-stream
            timeout: 10s
    """,
    "destinationrule-docs": """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: bookinfo-ratings
        spec:
          host: ratings.prod.svc.cluster.local
          workloadSelector:
            matchLabels:
              app: ratings
          trafficPolicy:
            loadBalancer:
              simple: LEAST_REQUEST
            connectionPool:
              http:
                idleTimeout: 30s
            outlierDetection:
              consecutive5xxErrors: 7
              interval: 5m
              baseEjectionTime: 15m
          subsets:
          - name: v1
            labels:
              version: v1
          - name: testversion
            labels:
              version: v3
            trafficPolicy:
              loadBalancer:
                consistentHash:
                  httpCookie:
                    name: user
                    ttl: 0.5s
    """,
    "canary-docs": """
        apiVersion: flagger.app/v1beta1
        kind: Canary
        metadata:
          name: podinfo
          namespace: test
        spec:
          targetRef:
            apiVersion: apps/v1
            kind: Deployment
            name: podinfo
          progressDeadlineSeconds: 60
          autoscalerRef:
            apiVersion: autoscaling/v2
            kind: HorizontalPodAutoscaler
            name: podinfo
          service:
            port: 9898
            targetPort: 9898
            gateways:
            - public-gateway.istio-system.svc.cluster.local
            hosts:
            - app.example.com
            trafficPolicy:
              tls:
                mode: DISABLE
            retries:
              attempts: 3
              perTryTimeout: 1s
              retryOn: "gateway-error,connect-failure,refused-stream"
            mirror:
            - backendRef:
                name: podinfo-shadow
                port: 9898
          analysis:
            interval: 1m
            threshold: 5
            maxWeight: 50
            stepWeight: 10
            metrics:
            - name: request-success-rate
              thresholdRange:
                min: 99
              interval: 1m
            - name: not-found-percentage
              templateRef:
                name: not-found-percentage
                namespace: istio-system
              thresholdRange:
                max: 5
              interval: 1m
            webhooks:
            - name: acceptance-test
              type: pre-rollout
              url: http://flagger-loadtester.test/
              timeout: 30s
              metadata:
                type: bash
                cmd: "curl -sd 'test' http://podinfo-canary:9898/token | grep token"
    """,
    "metrictemplate-docs": """
        apiVersion: flagger.app/v1beta1
        kind: MetricTemplate
        metadata:
          name: not-found-percentage
          namespace: istio-system
        spec:
          provider:
            type: prometheus
            address: http://prometheus.istio-system:9090
          query: |
            100 - sum(
                rate(
                    istio_requests_total{
                      reporter="destination",
                      destination_workload_namespace="{{ namespace }}",
                      destination_workload="{{ target }}",
                      response_code!="404"
                    }[{{ interval }}]
                )
            )
            /
            sum(
                rate(
                    istio_requests_total{
                      reporter="destination",
                      destination_workload_namespace="{{ namespace }}",
                      destination_workload="{{ target }}"
                    }[{{ interval }}]
                )
            ) * 100
    """,
    "serviceentry-docs": """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: external-svc-mongocluster
        spec:
          hosts:
          - mymongodb.somedomain
          addresses:
          - 192.192.192.192/24
          ports:
          - number: 27018
            name: mongodb
            protocol: MONGO
          location: MESH_INTERNAL
          resolution: STATIC
          endpoints:
          - address: 2.2.2.2
          - address: unix:///var/run/example/socket
    """,
    "serviceentry-dns": """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: external-svc-dns
        spec:
          hosts:
          - foo.bar.com
          location: MESH_EXTERNAL
          ports:
          - number: 443
            name: https
            protocol: TLS
            targetPort: 8443
          resolution: DNS
          endpoints:
          - address: us.foo.bar.com
            ports:
              https: 8443
          - address: uk.foo.bar.com
            ports:
              https: 9443
    """,
    "serviceentry-vm": """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: mtls-vm
        spec:
          hosts:
          - mysqldb.vmns.svc.cluster.local
          location: MESH_INTERNAL
          ports:
          - number: 3306
            name: mysql
            protocol: TCP
          resolution: STATIC
          workloadSelector:
            labels:
              app: mysqldb
    """,
    "envoyfilter-docs": """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata:
          name: custom-protocol
          namespace: istio-config
        spec:
          workloadSelector:
            labels:
              app: reviews
          configPatches:
          - applyTo: NETWORK_FILTER
            match:
              context: SIDECAR_OUTBOUND
              listener:
                portNumber: 9307
                filterChain:
                  filter:
                    name: envoy.filters.network.tcp_proxy
            patch:
              operation: INSERT_BEFORE
              value:
                name: envoy.extensions.filters.network.mongo_proxy
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy
                  stat_prefix: mongo
    """,
    "envoyfilter-waypoint": """
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata:
          name: waypoint-lua
        spec:
          targetRefs:
          - kind: Gateway
            group: gateway.networking.k8s.io
            name: waypoint
            namespace: ""
          configPatches:
          - applyTo: HTTP_FILTER
            match:
              context: WAYPOINT
              waypoint:
                portNumber: 8080
            patch:
              operation: INSERT_FIRST
              value:
                name: envoy.filters.http.lua
    """,
}


def example(name: str) -> dict:
    return yaml.load(textwrap.dedent(EXAMPLES[name]), Loader=crd_schema.ManifestLoader)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_valid_example_passes(name):
    assert crd_schema.validate(example(name)) == []


# ---------------------------------------------------------------------------------------------
# Broken documents: an example with changes at dotted paths (list indices as numbers; DELETE
# removes the key), and every error it must give, in order.

DELETE = object()


def changed(name: str, changes: dict) -> dict:
    doc = example(name)
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


DURATION_RULE = "must be a valid duration greater than 1ms"

BROKEN = [
    ("unknown-field-top", "wasmplugin-docs", {"labels": {"app": "x"}}, ["labels: unknown field"]),
    (
        "unknown-field-nested",
        "wasmplugin-docs",
        {"spec.selector.matchLabel": {"istio": "ingressgateway"}},
        ["spec.selector.matchLabel: unknown field"],
    ),
    ("unknown-metadata-field", "wasmplugin-docs", {"metadata.lables": {"a": "b"}}, ["metadata.lables: unknown field"]),
    (
        "wrong-type",
        "wasmplugin-docs",
        {"spec.priority": "10"},
        [
            'spec.priority: "10" is not of type integer',
            "spec: rule not checked because of the errors above: only one of targetRefs or selector can be set",
        ],
    ),
    (
        "int-given-as-float",
        "wasmplugin-docs",
        {"spec.priority": 1.5},
        [
            "spec.priority: 1.5 is not of type integer",
            "spec: rule not checked because of the errors above: only one of targetRefs or selector can be set",
        ],
    ),
    (
        "bad-enum",
        "wasmplugin-docs",
        {"spec.phase": "AUTHN2"},
        [
            'spec.phase: "AUTHN2" is not one of UNSPECIFIED_PHASE, AUTHN, AUTHZ, STATS',
            "spec: rule not checked because of the errors above: only one of targetRefs or selector can be set",
        ],
    ),
    (
        "missing-required",
        "destinationrule-docs",
        {"spec.host": DELETE},
        ["spec.host: missing required field"],
    ),
    (
        "missing-required-nested",
        "virtualservice-docs",
        {"spec.http.1.route.0.destination.host": DELETE},
        ["spec.http[1].route[0].destination.host: missing required field"],
    ),
    (
        "pattern",
        "wasmplugin-docs",
        {"spec.sha256": "1ef0c9a9"},
        ["spec.sha256: \"1ef0c9a9\" does not match pattern '(^$|^[a-f0-9]{64}$)'"],
    ),
    (
        "maximum-and-list-map-duplicate",
        "wasmplugin-oci",
        {"spec.match.0.ports": [{"number": 8080}, {"number": 8080}, {"number": 70000}]},
        [
            "spec.match[0].ports[2].number: 70000 is greater than the maximum 65535",
            "spec.match[0].ports[1]: duplicate entry with number 8080",
        ],
    ),
    (
        "one-of",
        "virtualservice-docs",
        {"spec.http.0.match.0.uri": {"prefix": "/ratings", "exact": "/ratings"}},
        ["spec.http[0].match[0].uri: only one of exact, prefix, regex may be set, found exact, prefix"],
    ),
    (
        "one-of-in-all-of",
        "destinationrule-docs",
        {"spec.subsets.1.trafficPolicy.loadBalancer.consistentHash.useSourceIp": True},
        [
            "spec.subsets[1].trafficPolicy.loadBalancer.consistentHash: only one of httpHeaderName, "
            "httpCookie, useSourceIp, httpQueryParameterName may be set, found httpCookie, useSourceIp"
        ],
    ),
    (
        "cel-selector-and-target-refs",
        "wasmplugin-docs",
        {"spec.targetRefs": [{"kind": "Service", "name": "storefront"}]},
        ["spec: fails rule: only one of targetRefs or selector can be set"],
    ),
    (
        "cel-url-scheme",
        "wasmplugin-docs",
        {"spec.url": "ftp://example.com/filter.wasm"},
        ['spec.url: "ftp://example.com/filter.wasm" fails rule: url must have schema one of [http, https, file, oci]'],
    ),
    (
        "cel-timeout-zero",
        "virtualservice-docs",
        {"spec.http.1.timeout": "0s"},
        [f'spec.http[1].timeout: "0s" fails rule: {DURATION_RULE}'],
    ),
    (
        "cel-timeout-below-1ms-by-a-nanosecond",
        "virtualservice-docs",
        {"spec.http.1.retries.perTryTimeout": "999999ns"},
        [f'spec.http[1].retries.perTryTimeout: "999999ns" fails rule: {DURATION_RULE}'],
    ),
    (
        "cel-rule-cannot-be-evaluated",
        "virtualservice-docs",
        {"spec.http.1.timeout": "10 seconds"},
        [
            f'spec.http[1].timeout: rule could not be evaluated for "10 seconds" ({DURATION_RULE}): '
            'time: unknown unit " seconds" in duration "10 seconds"'
        ],
    ),
    (
        "cel-rule-on-wrong-type-not-checked",
        "virtualservice-docs",
        {"spec.http.1.timeout": 10},
        [
            "spec.http[1].timeout: 10 is not of type string",
            f"spec.http[1].timeout: rule not checked because of the errors above: {DURATION_RULE}",
        ],
    ),
    (
        "cel-label-wildcard",
        "destinationrule-docs",
        {"spec.workloadSelector.matchLabels": {"app*": "ratings", "tier": "*"}},
        [
            'spec.workloadSelector.matchLabels[tier]: "*" fails rule: wildcard not allowed in label value match',
            "spec.workloadSelector.matchLabels: fails rule: wildcard not allowed in label key match",
        ],
    ),
    (
        "cel-list-item",
        "wasmplugin-oci",
        {"spec.vmConfig.env.0.value": "x"},
        ["spec.vmConfig.env[0]: fails rule: value may only be set when valueFrom is INLINE"],
    ),
    (
        "cel-cross-namespace",
        "wasmplugin-oci",
        {"spec.targetRefs.0.namespace": "other"},
        ['spec.targetRefs[0].namespace: "other" fails rule: cross namespace referencing is not currently supported'],
    ),
    (
        # group and kind are absent: the rule sees their defaults ("" and Service), as on the server.
        "cel-with-schema-defaults",
        "canary-docs",
        {"spec.service.mirror.0.backendRef.port": DELETE},
        ["spec.service.mirror[0].backendRef: fails rule: Must have port for Service reference"],
    ),
    (
        "cel-duplicate-port-numbers",
        "serviceentry-dns",
        {"spec.ports": [{"number": 443, "name": "https"}, {"number": 443, "name": "tls"}]},
        ["spec.ports: fails rule: port number cannot be duplicated"],
    ),
    (
        "cel-unix-socket-address",
        "serviceentry-docs",
        {"spec.endpoints.1.address": "unix://relative/dir/"},
        [
            'spec.endpoints[1].address: "unix://relative/dir/" fails rule: UDS must be an absolute path or abstract socket',
            'spec.endpoints[1].address: "unix://relative/dir/" fails rule: UDS may not be a dir',
        ],
    ),
    (
        "cel-bad-port-name",
        "serviceentry-dns",
        {"spec.endpoints.0.ports": {"-https": 8443}},
        ["spec.endpoints[0].ports: fails rule: port name must be valid"],
    ),
    (
        "cel-waypoint-match",
        "envoyfilter-docs",
        {"spec.configPatches.0.match.waypoint": {"portNumber": 8080}, "spec.configPatches.0.match.listener": DELETE},
        ["spec.configPatches[0].match: fails rule: only support waypointMatch when context is WAYPOINT"],
    ),
    (
        # Not a URL by itself: the rule's other branch reads it as http://ghcr.io/...
        "bare-image-reference-is-a-valid-url",
        "wasmplugin-docs",
        {"spec.url": "ghcr.io/example/progressive-delivery:v1"},
        [],
    ),
    (
        "null-in-nullable-and-non-nullable-fields",
        "wasmplugin-docs",
        # The server drops a null of a field that is not nullable, and keeps a nullable one.
        {"spec.priority": None, "spec.phase": None},
        [],
    ),
    (
        # kubectl sends YAML as JSON, where 10.0 is written 10: the server sees an integer.
        "integral-float-is-an-integer",
        "wasmplugin-docs",
        {"spec.priority": 10.0},
        [],
    ),
    (
        "bad-metadata-name",
        "wasmplugin-docs",
        {"metadata.name": "Progressive_Delivery"},
        [
            'metadata.name: "Progressive_Delivery" is not a valid DNS-1123 subdomain '
            "(lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, "
            "at most 253 characters)"
        ],
    ),
    ("missing-metadata-name", "wasmplugin-docs", {"metadata.name": DELETE}, ["metadata.name: missing required field"]),
    (
        "bad-namespace-and-labels",
        "wasmplugin-docs",
        {"metadata.namespace": "Istio.Ingress", "metadata.labels": {"version": 2, "app": "pd canary"}},
        [
            'metadata.namespace: "Istio.Ingress" is not a valid DNS-1123 label (lowercase letters, '
            "digits and '-', starting and ending with a letter or digit, at most 63 characters)",
            "metadata.labels[version]: 2 is not of type string",
            'metadata.labels[app]: "pd canary" is not a valid label value (letters, digits, \'-\', '
            "'_' and '.', starting and ending with a letter or digit, at most 63 characters, or empty)",
        ],
    ),
    (
        "apiversion-not-served",
        "virtualservice-docs",
        {"apiVersion": "networking.istio.io/v2"},
        [
            'apiVersion: "networking.istio.io/v2" is not served for VirtualService; served: '
            "networking.istio.io/v1, networking.istio.io/v1alpha3, networking.istio.io/v1beta1"
        ],
    ),
    (
        "kind-in-another-group",
        "wasmplugin-docs",
        {"apiVersion": "networking.istio.io/v1"},
        [
            'apiVersion: "networking.istio.io/v1" has no kind WasmPlugin; WasmPlugin is served as '
            "extensions.istio.io/v1alpha1"
        ],
    ),
    ("missing-kind", "wasmplugin-docs", {"kind": DELETE}, ["kind: missing required field"]),
    (
        # MetricTemplate has a status subresource but no status in its schema.
        "status-not-in-schema",
        "metrictemplate-docs",
        {"status": {"conditions": []}},
        ["status: unknown field"],
    ),
    (
        # On create the server resets a status subresource: only unknown fields count there.
        "status-values-ignored",
        "canary-docs",
        {"status": {"phase": "NotAPhase", "canaryWeight": "ten", "unknownCounter": 1}},
        ["status.unknownCounter: unknown field"],
    ),
    (
        "all-errors-of-a-document",
        "virtualservice-docs",
        {"spec.http.1.timeout": "0s", "spec.http.1.retries.attempts": "three", "spec.gateways": "mesh", "spec.tcp": [{}]},
        # In document order; the tcp route with nothing in it is valid.
        [
            'spec.http[1].retries.attempts: "three" is not of type integer',
            f'spec.http[1].timeout: "0s" fails rule: {DURATION_RULE}',
            'spec.gateways: "mesh" is not of type array',
        ],
    ),
]


@pytest.mark.parametrize("what,base,changes,errors", BROKEN, ids=[b[0] for b in BROKEN])
def test_document_errors(what, base, changes, errors):
    assert crd_schema.validate(changed(base, changes)) == errors


def test_kind_without_crd_is_not_checked():
    for doc in (
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "storefront"}},
        {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator", "metadata": {"name": "x"}},
    ):
        with pytest.raises(crd_schema.NoSchema):
            crd_schema.validate(doc)


# ---------------------------------------------------------------------------------------------
# The CEL rules of the CRDs


def test_every_crd_rule_compiles_and_calls_only_supported_functions():
    rules = crd_schema.default_schemas().rules
    assert len(rules) >= 20
    problems = {text: rule.problem for text, rule in rules.items() if rule.problem}
    assert problems == {}
    called = set().union(*(rule.functions for rule in rules.values()))
    assert called <= k8s_cel.SUPPORTED_FUNCTIONS
    # What the CRDs call today; a new function in an updated CRD must be implemented (and added
    # here) before it is trusted.
    assert called == {
        "all", "contains", "duration", "endsWith", "exists", "exists_one", "getScheme", "has",
        "isURL", "matches", "size", "startsWith", "substring", "url",
    }  # fmt: skip


def test_every_crd_rule_is_evaluated_by_the_valid_examples():
    log: list = []
    for name in EXAMPLES:
        crd_schema.validate(example(name), rule_log=log)
    outcomes = collections.defaultdict(set)
    for rule, outcome in log:
        outcomes[rule].add(outcome)
    served_rules = set()
    for crds in crd_schema.default_schemas().crds.values():
        for crd in crds:
            for version in crd.versions.values():
                served_rules |= _rules_in(version.schema)
    assert {r: outcomes.get(r, set()) for r in served_rules if outcomes.get(r) != {True}} == {}


def _rules_in(schema) -> set[str]:
    found = set()
    if isinstance(schema, dict):
        found |= {r["rule"] for r in schema.get("x-kubernetes-validations", [])}
        for v in schema.values():
            found |= _rules_in(v)
    elif isinstance(schema, list):
        for v in schema:
            found |= _rules_in(v)
    return found


# A CRD of our own, for what the real ones do not have: a rule calling a function that is not
# implemented, a rule that does not compile.
WIDGET_CRD = """
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.example.com
    spec:
      group: example.com
      names: {kind: Widget, plural: widgets}
      scope: Namespaced
      versions:
      - name: v1
        served: true
        storage: true
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec:
                type: object
                properties:
                  ip: {type: string}
                x-kubernetes-validations:
                - rule: isIP(self.ip)
                  message: ip must be an IP address
                - rule: self.ip.
    """


def test_unsupported_function_is_an_error_not_a_pass(tmp_path):
    path = tmp_path / "crd.yaml"
    path.write_text(textwrap.dedent(WIDGET_CRD))
    schemas = crd_schema.Schemas([path])
    doc = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"ip": "1.2.3.4"}}
    assert schemas.validate(doc) == [
        "spec: rule could not be evaluated (ip must be an IP address): "
        "calls functions this validator does not implement: isIP",
        "spec: rule could not be evaluated (failed rule: self.ip.): does not compile: syntax error at line 1, column 8",
    ]


UNSUPPORTED_SCHEMAS = [
    ("uniqueItems: true", "unsupported schema keyword uniqueItems"),
    ("x-kubernetes-embedded-resource: true", "unsupported schema keyword x-kubernetes-embedded-resource"),
    ("format: email", "format 'email' is checked by the API server but not by this validator"),
    ("pattern: '(?=x)'", "pattern '(?=x)' does not compile"),
]


@pytest.mark.parametrize("extra,message", UNSUPPORTED_SCHEMAS, ids=[u[0] for u in UNSUPPORTED_SCHEMAS])
def test_schema_the_validator_cannot_apply_is_refused(tmp_path, extra, message):
    path = tmp_path / "crd.yaml"
    crd = textwrap.dedent(WIDGET_CRD).replace("ip: {type: string}", "ip: {type: string, " + extra + "}")
    path.write_text(crd)
    with pytest.raises(crd_schema.SchemaError, match=re.escape(f"{path}: Widget v1: .spec.ip: {message}")):
        crd_schema.Schemas([path])


def test_schemas_are_the_upstream_files_listed_in_their_readme():
    readme = (REPO / "e2e" / "schemas" / "README.md").read_text()
    listed = dict(reversed(line.split()) for line in re.findall(r"^[0-9a-f]{64}  \S+$", readme, re.M))
    actual = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in crd_schema.SCHEMA_FILES}
    assert listed == actual


DURATIONS = [
    ("0", 0),
    ("-0", 0),
    ("5s", 5_000_000_000),
    ("+5s", 5_000_000_000),
    ("-5s", -5_000_000_000),
    ("5.s", 5_000_000_000),
    (".5s", 500_000_000),
    ("1.004s", 1_004_000_000),
    ("100.00100s", 100_001_000_000),
    ("11us", 11_000),
    ("12\u00b5s", 12_000),
    ("12\u03bcs", 12_000),
    ("1h2m3s4ms5us6ns", 3_723_004_005_006),
    ("-2m3.4s", -123_400_000_000),
    ("0.3333333333333333333h", 1_200_000_000_000),
    ("0.830103483285477580700h", 2_988_372_539_827),
    ("9223372036854775807ns", 2**63 - 1),
    ("-9223372036854775808ns", -(2**63)),
    ("", 'time: invalid duration ""'),
    ("3", 'time: missing unit in duration "3"'),
    (".s", 'time: invalid duration ".s"'),
    ("1d", 'time: unknown unit "d" in duration "1d"'),
    ("1h 30m", 'time: unknown unit "h " in duration "1h 30m"'),
    ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
]


@pytest.mark.parametrize("text,want", DURATIONS, ids=[d[0] or "empty" for d in DURATIONS])
def test_duration_parses_as_go_does(text, want):
    if isinstance(want, int):
        assert k8s_cel.parse_go_duration(text) == want
    else:
        with pytest.raises(k8s_cel.DurationError) as e:
            k8s_cel.parse_go_duration(text)
        assert str(e.value) == want


class Fails(str):
    """The expression is an error with exactly this text."""


URL_ERROR = "URL parse error during conversion from string: "

CEL = [
    # The Kubernetes URL library, on the examples of its documentation and Go's parse errors.
    ("url('https://example.com:80/').getHost()", "example.com:80"),
    ("url('https://[::1]:80/').getHost()", "[::1]:80"),
    ("url('https://example.com:80/').getHostname()", "example.com"),
    ("url('https://[::1]:80/').getHostname()", "::1"),
    ("url('https://example.com:80/').getPort()", "80"),
    ("url('https://example.com/').getPort()", ""),
    ("url('https://example.com/path with spaces/').getEscapedPath()", "/path%20with%20spaces/"),
    ("url('https://example.com/a%2Fb').getEscapedPath()", "/a%2Fb"),
    ("url('https://example.com/path?k1=a&k2=b&k2=c').getQuery() == {'k1': ['a'], 'k2': ['b', 'c']}", True),
    ("url('/absolute-path').getScheme()", ""),
    ("url('HTTPS://user:pass@example.com/').getScheme()", "https"),
    ("url('oci://ghcr.io/org/filter:v1').getHost()", "ghcr.io"),
    ("isURL('https://example.com/')", True),
    ("isURL('file:///opt/filter.wasm')", True),
    ("isURL('ghcr.io/org/filter:v1')", False),
    ("isURL('http://host:port/')", False),
    ("url('example.com')", Fails(URL_ERROR + 'parse "example.com": invalid URI for request')),
    ("url('http://host:port/')", Fails(URL_ERROR + 'parse "http://host:port/": invalid port ":port" after host')),
    ("url('https://exa mple.com/')", Fails(URL_ERROR + 'parse "https://exa mple.com/": invalid character " " in host name')),
    ("url('http://%41/')", Fails(URL_ERROR + 'parse "http://%41/": invalid URL escape "%41"')),
    ("url('/a%zzb')", Fails(URL_ERROR + 'parse "/a%zzb": invalid URL escape "%zz"')),
    ("url(':80')", Fails(URL_ERROR + 'parse ":80": missing protocol scheme')),
    ("url(1)", Fails("no such overload: url(int)")),
    # The strings extension's substring, counting code points.
    ("'unix:///x'.substring(7, 8)", "/"),
    ("'h\u00e9llo'.substring(1)", "\u00e9llo"),
    ("'unix://'.substring(7, 8)", Fails("index out of range: 8")),
    ("'abc'.substring(2, 1)", Fails("invalid substring range. start: 2, end: 1")),
    # Standard functions and macros as the rules use them.
    ("size('h\u00e9') == 2 && 'ab'.size() == 2 && size([1, 2, 3]) == 3 && {'a': 1}.size() == 1", True),
    ("size(1)", Fails("no such overload: size(int)")),
    ("'a-b'.matches('^[a-z](?:[-a-z]*[a-z])?$') && !'-ab'.matches('^[a-z]') && 'xab'.matches('ab')", True),
    ("'ab'.matches('(')", Fails('invalid regular expression "(": missing ): (')),
    ("duration('1h') > duration('59m59.999999999s') && duration('1000us') == duration('1ms')", True),
    ("duration('1ms') < 2", Fails("no such overload: duration and int")),
    ("duration('1d') > duration('1h')", Fails('time: unknown unit "d" in duration "1d"')),
    ("[1, 2, 3].all(x, x > 0) && [1, 2].exists(x, x == 2) && [1, 2, 2].exists_one(x, x == 1)", True),
    ("[1, 1].exists_one(x, x == 1)", False),
    ("{'a': 1, 'b': 2}.all(k, k.size() == 1) && !{'a': 1}.exists(k, k.startsWith('b'))", True),
    ("'abc'.contains('b') && 'abc'.startsWith('ab') && 'abc'.endsWith('bc') && 'a' in ['a', 'b']", True),
    ("{'a': 1}.b == 1 || {'a': 1}.c == 1", Fails("no such member in mapping: 'b'")),
]


@pytest.mark.parametrize("expr,want", CEL, ids=[c[0] for c in CEL])
def test_kubernetes_cel_library(expr, want):
    rule = k8s_cel.Rule(expr)
    if isinstance(want, Fails):
        with pytest.raises(k8s_cel.RuleError) as e:
            rule.evaluate(None, None)
        assert str(e.value) == want
    else:
        assert rule.evaluate(None, None) == want


def test_values_are_typed_from_the_schema():
    number = {"type": "number"}
    assert k8s_cel.Rule("self == 1.0").evaluate(number, 1) is True
    assert k8s_cel.Rule("self == 1").evaluate({"type": "integer"}, 1) is True
    assert k8s_cel.Rule("self == b'hi'").evaluate({"type": "string", "format": "byte"}, "aGk=") is True
    assert k8s_cel.Rule("self > duration('1s')").evaluate({"type": "string", "format": "duration"}, "2s") is True


# ---------------------------------------------------------------------------------------------
# YAML as kubectl reads it, and the command line


def test_yaml_is_decoded_as_kubectl_sends_it():
    docs = crd_schema.load_documents("a: 2024-01-01T00:00:00Z\nb: 1:30\nc: 1e3\nd: 010\n---\n---\ne: 1\n")
    assert docs == [{"a": "2024-01-01T00:00:00Z", "b": "1:30", "c": 1000.0, "d": 8}, {"e": 1}]
    with pytest.raises(yaml.YAMLError, match="duplicate key 'url'"):
        crd_schema.load_documents("spec:\n  url: a\n  url: b\n")


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "e2e" / "crd_schema.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_reports_each_document(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(
        "\n---\n".join(textwrap.dedent(EXAMPLES[n]) for n in ("wasmplugin-oci", "canary-docs"))
        + "\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: storefront\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(changed("wasmplugin-docs", {"spec.phase": "AUTHN2", "spec.selector.matchLabel": {}})))
    dup = tmp_path / "dup.yaml"
    dup.write_text("kind: WasmPlugin\nkind: WasmPlugin\n")

    r = run_cli(good)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines() == [
        f"{good}: WasmPlugin/progressive-delivery: ok",
        f"{good}: Canary/podinfo: ok",
        f"{good}: Service/storefront: not checked (no schema)",
        "3 documents in 1 file: 2 ok, 1 not checked (no schema), 0 with errors",
    ]

    r = run_cli("--strict-kinds", good)
    assert r.returncode == 1
    assert r.stdout.splitlines()[2:] == [
        f"{good}: Service/storefront: not checked (no schema)",
        "3 documents in 1 file: 2 ok, 0 not checked (no schema), 1 with errors",
    ]

    # A directory stands for the YAML files under it; one without any is an error.
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "good.yml").write_text(good.read_text())
    (tmp_path / "empty").mkdir()
    r = run_cli(tmp_path / "tree", tmp_path / "empty", tmp_path / "missing.yaml")
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        f"{tmp_path}/empty: no YAML files",
        f"{tmp_path}/tree/sub/good.yml: WasmPlugin/progressive-delivery: ok",
        f"{tmp_path}/tree/sub/good.yml: Canary/podinfo: ok",
        f"{tmp_path}/tree/sub/good.yml: Service/storefront: not checked (no schema)",
        f"{tmp_path}/missing.yaml: cannot read: [Errno 2] No such file or directory: '{tmp_path}/missing.yaml'",
        "4 documents in 2 files: 2 ok, 1 not checked (no schema), 1 with errors",
    ]

    r = run_cli(good, bad, dup)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[3:] == [
        f'{bad}: WasmPlugin/openid-connect: spec.phase: "AUTHN2" is not one of UNSPECIFIED_PHASE, AUTHN, AUTHZ, STATS',
        f"{bad}: WasmPlugin/openid-connect: spec.selector.matchLabel: unknown field",
        f"{bad}: WasmPlugin/openid-connect: spec: rule not checked because of the errors above: "
        "only one of targetRefs or selector can be set",
        f"{dup}: invalid YAML at line 2, column 1: duplicate key 'kind'",
        "5 documents in 3 files: 2 ok, 1 not checked (no schema), 2 with errors",
    ]


# ---------------------------------------------------------------------------------------------
# The manifests this project ships

SHIPPED_KINDS = ("WasmPlugin", "VirtualService", "DestinationRule", "Canary", "MetricTemplate")


def assert_manifests_valid(root: Path) -> None:
    """Every document of every YAML file under `root` is valid, and at least one document of
    each kind the project ships is among them."""
    files = crd_schema.manifest_files(root) if root.is_dir() else []
    checked = [c for f in files for c in crd_schema.check_file(f, crd_schema.default_schemas())]
    problems = [line for c in checked if c.status == "failed" for line in c.lines()]
    missing = [k for k in SHIPPED_KINDS if not any(c.kind == k for c in checked)]
    assert not problems and not missing, (
        f"under {root} ({len(files)} YAML files):\n"
        + "".join(f"  {p}\n" for p in problems)
        + (f"  no document of kind {', '.join(missing)}\n" if missing else "")
    )


def test_istio_manifests_match_schemas():
    """The manifests under istio/ (or under $PD_MANIFESTS, to check another tree such as the
    pinned copies `make istio-manifests` writes)."""
    assert_manifests_valid(Path(os.environ.get("PD_MANIFESTS", REPO / "istio")))


def write_examples(root: Path, names) -> None:
    for i, name in enumerate(names):
        sub = root / ("flagger" if "canary" in name or "metrictemplate" in name else "istio")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:02d}-{name}.yaml").write_text(textwrap.dedent(EXAMPLES[name]))


def test_manifest_check_passes_on_a_tree_of_valid_manifests(tmp_path):
    write_examples(tmp_path, EXAMPLES)
    (tmp_path / "service.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: storefront\n")
    assert_manifests_valid(tmp_path)


def test_manifest_check_fails_on_errors_and_on_missing_kinds(tmp_path):
    write_examples(tmp_path, [n for n in EXAMPLES if n != "metrictemplate-docs"])
    bad = changed("virtualservice-docs", {"spec.http.1.timeout": "0s"})
    (tmp_path / "istio" / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(AssertionError) as e:
        assert_manifests_valid(tmp_path)
    report = str(e.value)
    assert f'{tmp_path / "istio" / "bad.yaml"}: VirtualService/ratings: spec.http[1].timeout: "0s" fails rule: ' in report
    assert "no document of kind MetricTemplate" in report
