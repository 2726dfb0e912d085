"""Argo Rollouts' view of a rollout: the AnalysisTemplates of istio/argo/, with the arguments the
Rollout passes substituted the way Argo substitutes them, queried on a real Prometheus that
scrapes a real Envoy running the sidecar WasmPlugin of istio/argo/, and each answer judged by
the template's successCondition on expr (e2e/argo-expr: the expr-lang crate, checked against Go
expr v1.17.8, in the environment Argo gives a condition).

What Argo does is followed in its source (argoproj/argo-rollouts, docs/argo.md "Sources"):
- arguments: utils/analysis/factory.go BuildArgumentsForRolloutAnalysisRun (a Rollout's
  `value` or `valueFrom.fieldRef`), utils/analysis/helpers.go MergeArgs (the templates' args,
  filled in by name);
- substitution: factory.go ResolveMetricArgs and utils/template/template.go: the metric as
  JSON, each value Go-quoted without its quotes, fasttemplate tags between `{{` and `}}`
  (trimmed), the JSON read back;
- the measurement: metricproviders/prometheus processResponse (a vector is a list of float64,
  possibly empty) and utils/evaluate EvaluateResult (successCondition only: true is Successful,
  false Failed, an error Error).

The Envoy has the sidecar's configuration and clusters named as in Istio: canary_cluster
carries Argo's canary Service (`outbound|8080||api-canary.shop.svc.cluster.local`), which the
queries select by the Rollout's arguments, and the baseline copies go to the stable Service
(`outbound|8080||api-stable.shop.svc.cluster.local`), whose p99 the latency template divides by.
"""

from __future__ import annotations

import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import harness
import istio_model as im
from test_istio import istio_envoy_config, uid

ROLLOUT = "argo/rollout.yaml"
SIDECAR = "argo/wasmplugin-sidecar.yaml"
TEMPLATES = ["argo/analysistemplate-mismatch.yaml", "argo/analysistemplate-latency.yaml"]
MISMATCH, LATENCY = "canary-mismatch-ratio", "canary-latency-ratio"

EXPR_CRATE = harness.REPO / "e2e" / "argo-expr"
EXPR_TARGET = harness.REPO / "target" / "argo-expr"

# ---------------------------------------------------------------------------------------------
# Argo's arguments and their substitution


def _go_quoted(value: str) -> str:
    """strconv.Quote(value) without its quotes. For printable ASCII both it and JSON escape
    exactly `"` and `\\`; other values are not needed here and refused rather than guessed."""
    if not (value.isascii() and value.isprintable()):
        raise ValueError(f"argument value {value!r}: only printable ASCII is modelled")
    return json.dumps(value)[1:-1]


def resolve_metric(metric: dict, args: dict[str, str]) -> dict:
    """ResolveMetricArgs: `{{args.NAME}}` anywhere in the metric replaced by the value, verbatim."""
    values = {f"args.{name}": _go_quoted(v) for name, v in args.items()}
    text, out = json.dumps(metric), []
    while (start := text.find("{{")) >= 0:
        out.append(text[:start])
        text = text[start + 2 :]
        end = text.find("}}")
        if end < 0:
            raise ValueError(f'Cannot find end tag="}}}}" starting from {text!r}')
        tag, text = text[:end], text[end + 2 :]
        if tag.strip() not in values:
            raise ValueError(f"failed to resolve {{{{{tag}}}}}")
        out.append(values[tag.strip()])
    return json.loads("".join(out) + text)


def rollout_arg(rollout: dict, arg: dict) -> str:
    """BuildArgumentsForRolloutAnalysisRun for one of a Rollout's analysis args: its `value`,
    or the field `valueFrom.fieldRef.fieldPath` names in the Rollout (a path of keys and list
    indices that ends at a string). podTemplateHashValue names a ReplicaSet that only exists in
    a cluster: refused."""
    if "valueFrom" not in arg:
        return arg["value"]
    path = arg["valueFrom"]["fieldRef"]["fieldPath"]
    node = rollout
    for part in path.replace("[", ".").replace("]", "").split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    if not isinstance(node, str):
        raise ValueError(f"{path} is not a string in the Rollout: {node!r}")
    return node


def merge_args(incoming: dict[str, str], template: dict) -> dict[str, str]:
    """MergeArgs + ResolveArgs: the template's args, each given by the Rollout or its default;
    one with neither is an error. What the Rollout passes for no declared arg is dropped."""
    out = {}
    for a in template["spec"].get("args", []):
        if a["name"] in incoming:
            out[a["name"]] = incoming[a["name"]]
        elif "value" in a:
            out[a["name"]] = a["value"]
        else:
            raise ValueError(f"args.{a['name']} was not resolved")
    return out


def analysis_runs(rollout: dict, templates: dict[str, dict]) -> list[list[dict]]:
    """For each analysis step of the Rollout, the metrics of its AnalysisRun, resolved. The
    templates of one step are one run: an arg they share must have one value."""
    runs = []
    for step in rollout["spec"]["strategy"]["canary"]["steps"]:
        if "analysis" not in step:
            continue
        incoming = {a["name"]: rollout_arg(rollout, a) for a in step["analysis"].get("args", [])}
        merged: dict[str, str] = {}
        metrics = []
        for ref in step["analysis"]["templates"]:
            template = templates[ref["templateName"]]
            args = merge_args(incoming, template)
            for name, value in args.items():
                if merged.setdefault(name, value) != value:
                    raise ValueError(f"Argument `{name}` specified multiple times with different values")
            metrics += [resolve_metric(m, args) for m in template["spec"]["metrics"]]
        runs.append(metrics)
    return runs


def shipped_runs() -> list[list[dict]]:
    templates = {t["metadata"]["name"]: t for t in map(im.one, TEMPLATES)}
    return analysis_runs(im.one(ROLLOUT), templates)


RESOLVE_CASES = [
    # (id, metric, args, resolved metric or the error)
    ("verbatim", {"q": 'x{s=~"{{args.svc}}\\\\.ns"}'}, {"svc": "api-canary"}, {"q": 'x{s=~"api-canary\\\\.ns"}'}),
    ("spaces-trimmed", {"q": "{{ args.svc }}"}, {"svc": "a"}, {"q": "a"}),
    ("every-field", {"q": "{{args.n}}", "successCondition": "result[0] <= {{args.n}}"}, {"n": "0.5"},
     {"q": "0.5", "successCondition": "result[0] <= 0.5"}),
    # The value is quoted for the JSON it lands in, so it comes back as written: a `"` closes
    # the PromQL string it was meant to sit in.
    ("quote-survives", {"q": 's="{{args.v}}"'}, {"v": 'a"b'}, {"q": 's="a"b"'}),
    ("unknown-arg", {"q": "{{args.nope}}"}, {"svc": "a"}, "failed to resolve {{args.nope}}"),
    ("brace-before-tag", {"q": "x{{{args.svc}}"}, {"svc": "a"}, "failed to resolve {{{args.svc}}"),
    ("no-end-tag", {"q": "x{{args.svc"}, {"svc": "a"}, "Cannot find end tag"),
]  # fmt: skip


@pytest.mark.parametrize("metric,args,want", [c[1:] for c in RESOLVE_CASES], ids=[c[0] for c in RESOLVE_CASES])
def test_resolve_like_argo(metric, args, want):
    if isinstance(want, str):
        with pytest.raises(ValueError, match=want.replace("{", r"\{").replace("}", r"\}")):
            resolve_metric(metric, args)
    else:
        assert resolve_metric(metric, args) == want


def test_every_analysis_step_resolves_to_the_same_run():
    runs = shipped_runs()
    assert len(runs) == 5 and all(run == runs[0] for run in runs)
    assert sorted(m["name"] for m in runs[0]) == sorted([MISMATCH, LATENCY])
    for m in runs[0]:
        for text in (m["successCondition"], m["provider"]["prometheus"]["query"]):
            assert "{{" not in text and "}}" not in text, text
        assert "api-canary\\\\.shop\\\\.svc" in m["provider"]["prometheus"]["query"], m


def test_args_without_value_are_refused():
    template = im.one(TEMPLATES[0])
    with pytest.raises(ValueError, match="args.canary-service was not resolved"):
        merge_args({"namespace": "shop"}, template)


# ---------------------------------------------------------------------------------------------
# successCondition on expr


@pytest.fixture(scope="session")
def argo_expr():
    """The evaluator, built once (pinned by its Cargo.lock; no network once the crates are in
    cargo's cache)."""
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--quiet", "--manifest-path", str(EXPR_CRATE / "Cargo.toml"),
         "--target-dir", str(EXPR_TARGET)],
        check=True, timeout=1200,
    )  # fmt: skip
    binary = EXPR_TARGET / "release" / "argo-expr"

    def evaluate(condition: str, result) -> bool | str:
        """The condition's boolean, or its error's text."""
        r = subprocess.run([binary], input=json.dumps({"condition": condition, "result": result}), capture_output=True, text=True, timeout=30)
        if r.returncode:
            return r.stderr.strip() or f"exit {r.returncode}"
        assert r.stdout.strip() in ("true", "false"), r.stdout
        return r.stdout.strip() == "true"

    return evaluate


def phase(evaluate, metric: dict, result) -> str:
    """EvaluateResult for a metric with a successCondition and no failureCondition."""
    assert "failureCondition" not in metric, metric
    got = evaluate(metric["successCondition"], result)
    return {True: "Successful", False: "Failed"}.get(got, "Error") if isinstance(got, bool) else "Error"


def limit(metric: dict) -> float:
    """The number the condition compares result[0] with (the resolved argument)."""
    return float(metric["successCondition"].rsplit("<=", 1)[1])


# (id, result as Argo's Prometheus provider hands it over, phase); a float is written as the
# Prometheus HTTP API writes a sample value. LIMIT stands for the template's limit.
CONDITION_CASES = [
    ("below", ["0.004"], "Successful"),
    ("at-limit", ["LIMIT"], "Successful"),
    ("above", ["LIMIT*2"], "Failed"),
    ("nothing-compared", ["NaN"], "Failed"),
    ("no-series", [], "Failed"),
    ("infinite", ["+Inf"], "Failed"),
    ("first-series-decides", ["0.004", "NaN"], "Successful"),
]


@pytest.mark.parametrize("result,want", [c[1:] for c in CONDITION_CASES], ids=[c[0] for c in CONDITION_CASES])
@pytest.mark.parametrize("name", [MISMATCH, LATENCY])
def test_shipped_condition(argo_expr, name, result, want):
    [metric] = [m for m in shipped_runs()[0] if m["name"] == name]
    lim = limit(metric)
    result = [str(lim) if v == "LIMIT" else str(lim * 2) if v == "LIMIT*2" else v for v in result]
    assert phase(argo_expr, metric, result) == want


# What docs/argo.md says of other ways to write the condition. expr.rs reaches the same phase
# as Go expr, for its own reasons: `result[0]` on an empty list is nil (Go: index out of range),
# and `nil <= 0.01` is the error; a type error Go finds when compiling is one when running.
OTHER_CONDITIONS = [
    ("bare-on-empty", "result[0] <= 0.01", [], "Error"),
    ("bare-on-nan", "result[0] <= 0.01", ["NaN"], "Failed"),
    ("all-on-empty", "all(result, {# <= 0.01})", [], "Successful"),
    ("isNaN-of-list", "isNaN(result)", ["NaN"], "Error"),
    ("list-compared", "result <= 0.01", ["0.004"], "Error"),
    ("empty-is-not-nil", "isNil(result)", [], "Failed"),
    ("default-on-empty", "len(default(result, [0.0])) == 0", [], "Successful"),
    ("not-a-bool", "result[0]", ["0.004"], "Error"),
]


@pytest.mark.parametrize("condition,result,want", [c[1:] for c in OTHER_CONDITIONS], ids=[c[0] for c in OTHER_CONDITIONS])
def test_other_conditions(argo_expr, condition, result, want):
    assert phase(argo_expr, {"successCondition": condition}, result) == want


# ---------------------------------------------------------------------------------------------
# The templates on a real Prometheus scraping a real Envoy

# Every upstream answers after DELAY, the canary after SLOW when it is slow: just above the
# lower bound of Envoy's histogram buckets 500 < ms <= 1000 and 1000 < ms <= 2500, so that what
# Envoy and a busy machine add (a single answer 500 ms late moves a p99 of 40 answers) leaves
# each answer in its bucket, and SLOW stays far from the sidecar's timeout_ms (2000). A canary
# as fast as the baseline then has a p99 ratio of 1, a slow one of 2.5.
DELAY, SLOW = 0.51, 1.1
# The answer is within this of the true share: rate() extrapolates, as in test_flagger.py.
TOLERANCE = 0.02
REQUESTS = 40
# Requests in flight at once. Each is one new connection to each upstream at first, and the
# upstreams' listen backlog is 5 (socketserver's default): more, and a connect waits for a SYN
# retransmit, past the clusters' 1 s connect timeout, when the machine is busy.
CONCURRENCY = 4
DIFFER_EVERY = 4
SAME = {"price": 10, "currency": "EUR"}


class Canary:
    """Answers like the primary after DELAY; switched to `differ_every` n-th answer differing
    and `slow` answers."""

    def __init__(self):
        self.differ_every, self.slow = 0, False
        self.seen = self.differed = 0
        self.lock = threading.Lock()
        self._wake = threading.Event()

    def __call__(self, req: harness.Received):
        with self.lock:
            self.seen += 1
            differ = bool(self.differ_every) and self.seen % self.differ_every == 0
            self.differed += differ
            wait = SLOW if self.slow else DELAY
        self._wake.wait(wait)
        return harness.fixed(200, {**SAME, "price": 11, "timestamp": 2} if differ else {**SAME, "timestamp": 2})(req)

    def stop(self) -> None:
        self._wake.set()


def measure(prom, evaluate, metric: dict) -> tuple[str, list[str]]:
    """One measurement: the metric's query on Prometheus, the result as Argo hands it to the
    condition (a vector as its sample values), and the phase."""
    result = [s["value"][1] for s in prom.query(metric["provider"]["prometheus"]["query"])]
    return phase(evaluate, metric, result), result


def test_analysis_on_real_prometheus(envoy, upstream, prometheus, argo_expr):
    sidecar = im.one(SIDECAR)
    mirror = sidecar["spec"]["pluginConfig"]["mirror"]
    cluster = im.mirror_cluster(sidecar)
    assert cluster == "outbound|8080||api-canary.shop.svc.cluster.local"
    # The baseline: the same copy to the stable Service, whose answers set the canary's
    # yardstick (noise) and its latency's (the latency template's denominator).
    baseline = mirror["baseline"]["cluster"]
    assert baseline == "outbound|8080||api-stable.shop.svc.cluster.local"
    run = {m["name"]: m for m in shipped_runs()[0]}
    assert "progressive_delivery_baseline_duration_ms_bucket" in run[LATENCY]["provider"]["prometheus"]["query"]

    primary = upstream("app", harness.Delayed(DELAY, harness.fixed(200, {**SAME, "timestamp": 1})))
    canary = Canary()
    stable = upstream("baseline", harness.Delayed(DELAY, harness.fixed(200, {**SAME, "timestamp": 3})))
    clusters = {"app": primary.port, cluster: upstream("canary", canary).port, baseline: stable.port}
    e = envoy(istio_envoy_config(sidecar, [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}], clusters))
    prom = prometheus([f"127.0.0.1:{e.admin_port}"])
    harness.wait_until(prom.targets_up, timeout=20, what="Prometheus scraping Envoy")
    where = f'canary_cluster="{cluster}"'
    read = {
        "comparisons": f"progressive_delivery_comparisons_total{{{where}}}",
        **{h: f"progressive_delivery_{h}_duration_ms_count{{{where}}}" for h in ("mirror", "primary", "baseline")},
    }

    # The filter defines its series when configured, at 0: once Prometheus has two samples of
    # each, the rates are 0 and both ratios are 0/0. Nothing compared is no evidence: Failed.
    harness.wait_until(
        lambda: all(prom.query(f"count_over_time({s}[1m]) < 2") == [] and prom.query(s) for s in read.values()),
        timeout=20, what="two scrapes of every series the queries read",
    )  # fmt: skip
    for name, metric in run.items():
        assert measure(prom, argo_expr, metric) == ("Failed", ["NaN"]), name

    # Args naming a Service nobody mirrors to: no series at all. Also Failed, not Error.
    template = im.one(TEMPLATES[0])
    args = merge_args({"canary-service": "checkout-canary", "namespace": "shop"}, template)
    assert measure(prom, argo_expr, resolve_metric(template["spec"]["metrics"][0], args)) == ("Failed", [])

    sampled = uid(False, True, mirror["percent"])
    sent = 0

    def traffic(n: int) -> None:
        nonlocal sent
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            got = list(pool.map(lambda i: e.request("GET", f"/api/prices/{i}", [("cookie", f"uid={sampled}")]).status, range(sent, sent + n)))
        assert got == [200] * n
        sent += n
        harness.wait_until(lambda: canary.seen == sent, what=f"{sent} mirrors at the canary")
        counts = {"body_mismatch": canary.differed, "match": sent - canary.differed}
        counts = {k: v for k, v in counts.items() if v}
        harness.wait_until(
            lambda: harness.counts_by(e, "progressive_delivery_comparisons_total", "result", canary_cluster=cluster) == counts,
            what=f"Envoy counted {counts}",
        )
        harness.wait_until(
            lambda: harness.counts_by(e, "progressive_delivery_baseline_total", "result", canary_cluster=cluster) == {"answered": sent},
            what=f"{sent} baseline copies answered",
        )
        assert len(stable.received) == sent
        # Prometheus has the final values once its sums agree with Envoy's counts (histograms
        # reach /stats/prometheus at Envoy's next stats flush, counters at once).
        for s in read.values():
            harness.wait_until(lambda s=s: prom.scalar(f"sum({s})") == sent, timeout=15, what=f"Prometheus has sum({s}) = {sent}")

    # The canary answers like the primary, as fast.
    traffic(REQUESTS)
    got = {name: measure(prom, argo_expr, m) for name, m in run.items()}
    print(f"\ncanary matches: {got}")
    assert got[MISMATCH] == ("Successful", ["0"])
    assert got[LATENCY][0] == "Successful", got

    # Every fourth answer differs, and every answer comes slower. The window still holds the
    # matching comparisons, which dilute the share.
    canary.differ_every, canary.slow = DIFFER_EVERY, True
    traffic(REQUESTS)
    got = {name: measure(prom, argo_expr, m) for name, m in run.items()}
    print(f"canary differs: {got}")
    assert got[MISMATCH][0] == "Failed" and got[LATENCY][0] == "Failed", got
    share = canary.differed / sent
    assert share == 1 / DIFFER_EVERY / 2
    assert abs(float(got[MISMATCH][1][0]) - share) <= TOLERANCE, (got, share)
    # Half the canary's answers in the window took SLOW, so its p99 is in SLOW's bucket; every
    # baseline answer took DELAY: about twice the baseline's p99.
    assert float(got[LATENCY][1][0]) > limit(run[LATENCY]), got


def test_noise_counts_as_agreement(envoy, upstream, prometheus, argo_expr):
    """Where the canary differs from the baseline only as two stable instances differ from each
    other, the comparison is `noise`: in the mismatch ratio's denominator, not its numerator, so
    such a canary passes the gate. Noise is learned from the first observation here
    (min_samples 1) so that every comparison is one."""
    sidecar = im.one(SIDECAR)
    mirror = sidecar["spec"]["pluginConfig"]["mirror"]
    mirror["noise"] = {"min_samples": 1}
    cluster, baseline = mirror["cluster"], mirror["baseline"]["cluster"]
    [metric] = [m for m in shipped_runs()[0] if m["name"] == MISMATCH]

    # Each instance names itself in its answers: primary and baseline differ at /served_by on
    # every request, and the canary differs from the baseline there, and only there.
    ups = {name: upstream(name, harness.fixed(200, {**SAME, "served_by": name})) for name in ("app", "canary", "baseline")}
    clusters = {"app": ups["app"].port, cluster: ups["canary"].port, baseline: ups["baseline"].port}
    e = envoy(istio_envoy_config(sidecar, [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}], clusters))
    prom = prometheus([f"127.0.0.1:{e.admin_port}"])
    harness.wait_until(prom.targets_up, timeout=20, what="Prometheus scraping Envoy")

    sampled = uid(False, True, mirror["percent"])
    for i in range(REQUESTS):
        assert e.request("GET", f"/api/prices/{i}", [("cookie", f"uid={sampled}")]).status == 200
    harness.wait_until(
        lambda: harness.counts_by(e, "progressive_delivery_comparisons_total", "result", canary_cluster=cluster) == {"noise": REQUESTS},
        what=f"Envoy counted {REQUESTS} noise results",
    )
    total = f'sum(progressive_delivery_comparisons_total{{canary_cluster="{cluster}"}})'
    harness.wait_until(lambda: prom.scalar(total) == REQUESTS, timeout=15, what="Prometheus has the final counts")

    assert measure(prom, argo_expr, metric) == ("Successful", ["0"])
    # Leaving `noise` out of the denominator as well would leave nothing compared: 0/0, no
    # evidence, and a canary that agrees with the stable version on everything two stable
    # instances agree on would fail the gate.
    query = metric["provider"]["prometheus"]["query"]
    assert query.count('result!="skipped"') == 1
    without_noise = {**metric, "provider": {"prometheus": {**metric["provider"]["prometheus"], "query": query.replace('result!="skipped"', 'result!~"skipped|noise"')}}}
    assert measure(prom, argo_expr, without_noise) == ("Failed", ["NaN"])
