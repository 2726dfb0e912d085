"""Live configuration pushes in a real Envoy: the filter's config comes from extension config
discovery (ECDS), the way Istio delivers a WasmPlugin, here from a watched file. Under steady
load a new valid config takes over without failing a request or closing a connection; a config
the filter refuses, or one Envoy cannot even parse, is rejected, counted and logged while the
last good one keeps serving; metrics carry on across the pushes; and mirrors still pending when
their configuration is replaced are compared all the same.

What each ECDS stat means here was measured, not assumed: `update_success` and `version_text`
say a push was applied, `update_rejected` that its content was refused (by the filter's
`on_configure` or by Envoy), `update_failure` that the file could not be read or parsed, and
`config_fail` counts both. `config_reload` is no success count: it also went up for the push
the filter refused (not for the unparsable one).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
from pathlib import Path

import pytest
import yaml

import harness

FILTER = "progressive-delivery"
STAT_PREFIX = f"extension_config_discovery.http_filter.{FILTER}."
REQUESTS_TOTAL = "progressive_delivery_requests_total"
MIRROR_TOTAL = "progressive_delivery_mirror_total"
COMPARISONS = "progressive_delivery_comparisons_total"
PENDING = "progressive_delivery_mirrors_pending"
# Logged by the root context of a configuration Envoy retires with mirrors still pending.
RETIRED = re.compile(r"configuration retired \(replaced, or Envoy stopping\) with (\d+) mirrors pending")


class EcdsFile:
    """The file Envoy watches for the filter's configuration: a DiscoveryResponse (YAML, by the
    file's extension) holding one TypedExtensionConfig named like the filter.

    Envoy reacts to a file being renamed onto the path (inotify IN_MOVED_TO), not to writes
    into it, so every push writes a temporary file in the same directory and renames it over
    (atomic: Envoy never reads half a file). `write_in_place` is the edit Envoy misses."""

    def __init__(self, directory: Path):
        self.path = directory / "ecds.yaml"
        self.version = 0

    def document(self, plugin_config: dict, vm_id: str | None = None) -> str:
        self.version += 1
        typed_config = harness.wasm_filter(plugin_config)["typed_config"]
        if vm_id is not None:
            typed_config["config"]["vm_config"]["vm_id"] = vm_id
        return yaml.safe_dump(
            {
                "version_info": str(self.version),
                "resources": [
                    {
                        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                        "name": FILTER,
                        "typed_config": typed_config,
                    }
                ],
            }
        )

    def push(self, plugin_config: dict, vm_id: str | None = None) -> str:
        """Pushes the config; returns its version_info."""
        self.push_text(self.document(plugin_config, vm_id))
        return str(self.version)

    def push_text(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def write_in_place(self, text: str) -> None:
        with open(self.path, "w") as f:
            f.write(text)

    def http_filter(self) -> dict:
        # No default_config: until a first config is applied the filter answers 500
        # (test_before_a_first_good_config_every_request_gets_500); the listener waits for the
        # file's first config before it takes traffic.
        return {
            "name": FILTER,
            "config_discovery": {
                "config_source": {"path_config_source": {"path": str(self.path)}},
                "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"],
            },
        }


def ecds_config(ecds: EcdsFile, upstreams: dict[str, harness.Upstream], to: dict[str, str]) -> dict:
    """Routes on the class (`to`, else `primary`), one cluster per upstream, mirror tags."""
    return harness.bootstrap(
        http_filters=[ecds.http_filter(), harness.ROUTER],
        routes=harness.class_routes(to, "primary"),
        clusters=[harness.static_cluster(name, up.port) for name, up in upstreams.items()],
    )


def ecds_stats(e: harness.Envoy) -> dict[str, str]:
    out = {}
    for line in e.admin("/stats").splitlines():
        name, _, value = line.partition(": ")
        if name.startswith(STAT_PREFIX):
            out[name.removeprefix(STAT_PREFIX)] = value.strip('"')
    return out


def wait_for_stats(e: harness.Envoy, **want: int | str) -> dict[str, str]:
    """Waits until the ECDS stats named in `want` have those values (compared as text)."""
    want_text = {k: str(v) for k, v in want.items()}

    def check():
        got = ecds_stats(e)
        return got if all(got.get(k) == v for k, v in want_text.items()) else None

    try:
        return harness.wait_until(check, 15, what=f"ECDS stats {want_text}")
    except AssertionError as err:
        raise AssertionError(f"{err}; got {ecds_stats(e)}") from None


# ---------------------------------------------------------------------------------------------
# Load


class Client(threading.Thread):
    """Sends GETs one after another on one keep-alive connection until `stop`, recording what
    each answer says (upstream, class) and every failure: an error, a status other than 200,
    a connection Envoy closed."""

    def __init__(self, port: int, kind: str, headers: list[tuple[str, str]], stop: threading.Event, n: int):
        super().__init__(daemon=True, name=f"load-{kind}-{n}")
        self.port, self.kind, self.headers, self.stop_event = port, kind, headers, stop
        self.seen: list[tuple[str, str]] = []
        self.failures: list[str] = []
        self.connections = 0

    def run(self) -> None:
        conn = None
        i = 0
        while not self.stop_event.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.connections += 1
            i += 1
            try:
                conn.request("GET", f"/load/{self.kind}/{i}", headers=dict(self.headers))
                r = conn.getresponse()
                body = r.read()
            except (OSError, http.client.HTTPException) as err:
                self.failures.append(f"{self.kind} #{i}: {err!r}")
                conn.close()
                conn = None
                continue
            if r.status == 200:
                answer = json.loads(body)
                self.seen.append((answer["upstream"], answer["x-user-class"]))
            else:
                self.failures.append(f"{self.kind} #{i}: status {r.status} {body[:200]!r}")
            if r.will_close:
                self.failures.append(f"{self.kind} #{i}: Envoy closed the connection")
                conn.close()
                conn = None
            # A pause between requests keeps the load steady and moderate on a shared machine.
            self.stop_event.wait(0.005)
        if conn is not None:
            conn.close()


# Traffic kinds: the headers each client sends.
KINDS = {
    "beta": [("x-beta", "1")],
    "insider": [("cookie", "a=1; type=insider")],
    # A client naming its own class is classified like anyone else.
    "plain": [("x-user-class", "beta")],
}

# Three configs that classify the same traffic differently, and what each kind gets with each:
# (upstream the route picked, class the upstream received).
# The shadow answers other bodies than the primary; only statuses are compared.
SHADOW = {"cluster": "shadow", "timeout_ms": 10000, "compare": {"body": "none"}}
CONFIG_A = {
    "classification": {"rules": [{"class": "beta", "header": {"name": "x-beta", "exact": "1"}}]},
    "mirror": SHADOW,
}
CONFIG_B = {
    "classification": {"rules": [{"class": "insider", "cookie": {"name": "type", "exact": "insider"}}]},
    "mirror": SHADOW,
}
CONFIG_D = {
    "classification": {
        "rules": [
            {"class": "insider", "cookie": {"name": "type", "exact": "insider"}},
            {"class": "beta", "header": {"name": "x-beta", "exact": "1"}},
        ]
    },
    "mirror": {**SHADOW, "percent": 50},
}
EXPECT = {
    "A": {"beta": ("canary", "beta"), "insider": ("primary", "stable"), "plain": ("primary", "stable")},
    "B": {"beta": ("primary", "stable"), "insider": ("canary", "insider"), "plain": ("primary", "stable")},
    "D": {"beta": ("canary", "beta"), "insider": ("canary", "insider"), "plain": ("primary", "stable")},
}
TO_CANARY = {"beta": "canary", "insider": "canary"}
# Refused by the filter's on_configure (Envoy created the VM and asked it).
REFUSED_BY_FILTER = {"classification": {"rules": [{"class": "f", "header": {"name": "user-agent", "regex": "(Firefox"}}]}}
REFUSAL_LINE = 'invalid configuration: classification.rules[0].header.regex: "(Firefox" is not a valid regex'
# Refused by Envoy before any VM: the file is not even YAML.
NOT_YAML = "version_info: '9'\nresources: [\n  - {"

PER_PHASE = 100


def switched_once(seq: list, before, after) -> bool:
    """`seq` is some `before`s followed by some `after`s, nothing else."""
    i = 0
    while i < len(seq) and seq[i] == before:
        i += 1
    return all(x == after for x in seq[i:])


def test_pushes_under_load_switch_rules_and_never_fail_a_request(envoy, upstream, tmp_path):
    ecds = EcdsFile(tmp_path)
    ecds.push(CONFIG_A)
    ups = {"primary": upstream("primary"), "canary": upstream("canary"), "shadow": upstream("shadow")}
    e = envoy(ecds_config(ecds, ups, TO_CANARY))
    wait_for_stats(e, update_success=1, version_text=1)

    stop = threading.Event()
    # Two connections per kind, so both workers are likely to carry each kind.
    clients = [Client(e.listener_port, kind, headers, stop, n) for kind, headers in KINDS.items() for n in range(2)]
    marks: dict[str, list[int]] = {}

    def mark(name: str) -> None:
        marks[name] = [len(c.seen) for c in clients]

    def wait_for(phase: str, since: str) -> None:
        """Until every client has PER_PHASE answers since the mark, the last as `phase` says."""

        def ready():
            return all(
                len(c.seen) - m >= PER_PHASE and c.seen[-1] == EXPECT[phase][c.kind]
                for c, m in zip(clients, marks[since])
            )

        try:
            harness.wait_until(ready, 30, what=f"config {phase} serving every client")
        except AssertionError as err:
            detail = {c.name: (len(c.seen), c.seen[-3:], c.failures[-3:]) for c in clients}
            raise AssertionError(f"{err}: {detail}") from None

    try:
        for c in clients:
            c.start()
        mark("start")
        wait_for("A", "start")

        mark("B")
        version_b = ecds.push(CONFIG_B)
        wait_for_stats(e, update_success=2, version_text=version_b)
        wait_for("B", "B")

        # Refused by the filter: Envoy built a VM for it, on_configure said no.
        mark("C")
        ecds.push(REFUSED_BY_FILTER)
        wait_for_stats(e, update_rejected=1, config_fail=1, update_success=2, version_text=version_b)
        harness.wait_for_log(e, "wasm log progressive-delivery", REFUSAL_LINE)
        harness.wait_for_log(e, "Filesystem config update rejected: Unable to create Wasm plugin progressive-delivery")
        wait_for("B", "C")

        # Refused by Envoy before any VM: the file does not parse.
        mark("C2")
        ecds.push_text(NOT_YAML)
        wait_for_stats(e, update_failure=1, config_fail=2, update_success=2, version_text=version_b)
        harness.wait_for_log(e, f"Filesystem config update failure: in {ecds.path}")
        wait_for("B", "C2")

        # A good config after the bad ones is taken.
        mark("D")
        version_d = ecds.push(CONFIG_D)
        wait_for_stats(e, update_success=3, version_text=version_d)
        wait_for("D", "D")
    finally:
        stop.set()
        for c in clients:
            c.join(30)

    total = sum(len(c.seen) for c in clients)
    failures = [f for c in clients for f in c.failures]
    stats = ecds_stats(e)
    print(f"\n{total} requests under load across 3 pushes and 2 rejected ones; {len(failures)} failed")
    print(f"ECDS stats: {stats}")
    assert failures == []
    counted = ("update_attempt", "update_success", "update_rejected", "update_failure", "config_fail", "version_text")
    assert {k: stats[k] for k in counted} == {
        "update_attempt": "5",
        "update_success": "3",
        "update_rejected": "1",
        "update_failure": "1",
        "config_fail": "2",
        "version_text": version_d,
    }, stats
    # No push closed a connection: each client kept its first one throughout.
    assert [c.connections for c in clients] == [1] * len(clients)

    # Each client saw A, then B from some point after B was pushed, B throughout the rejected
    # pushes, then D from some point after D was pushed; never a mix.
    for i, c in enumerate(clients):
        seq = c.seen
        m = {name: marks[name][i] for name in marks}
        want = {phase: EXPECT[phase][c.kind] for phase in EXPECT}
        assert set(seq[: m["B"]]) == {want["A"]}, (c.name, seq[: m["B"]][-5:])
        assert switched_once(seq[m["B"] : m["C"]], want["A"], want["B"]), (c.name, seq[m["B"] : m["C"]])
        assert set(seq[m["C"] : m["D"]]) == {want["B"]}, (c.name, "a rejected push changed the answers")
        assert switched_once(seq[m["D"] :], want["B"], want["D"]), (c.name, seq[m["D"] :])

    # The counters carried on across the pushes: per class, exactly what the clients saw,
    # one series each (the same metric defined again by each new configuration).
    seen_classes: dict[str, int] = {}
    for c in clients:
        for _, cls in c.seen:
            seen_classes[cls] = seen_classes.get(cls, 0) + 1
    text = e.prometheus()
    samples = harness.prometheus_samples(text, REQUESTS_TOTAL)
    assert len(samples) == len({tuple(sorted(labels.items())) for labels, _ in samples}), samples
    assert text.count(f"# TYPE {REQUESTS_TOTAL} counter") == 1
    assert {labels["user_class"]: v for labels, v in samples if v} == seen_classes
    # Every request reached the upstream its answer named, once.
    at = {name: len([r for r in up.take() if r.path.startswith("/load/")]) for name, up in ups.items() if name != "shadow"}
    assert at == {
        name: sum(1 for c in clients for where, _ in c.seen if where == name) for name in ("primary", "canary")
    }
    # Every request was decided once: mirrored, or under D's 50% not sampled.
    decisions = harness.counts_by(e, MIRROR_TOTAL, "decision")
    assert sum(decisions.values()) == total and set(decisions) == {"mirrored", "not_sampled"}, decisions
    # Every mirror got its result across the pushes, and the one its answers imply: the shadow
    # answers 200 as the primary and the canary do, and only statuses are compared.
    mirrored = decisions["mirrored"]
    harness.wait_until(lambda: sum(harness.counts_by(e, COMPARISONS, "result").values()) >= mirrored, 15, what="results")
    assert harness.counts_by(e, COMPARISONS, "result") == {"match": mirrored}
    assert len([r for r in ups["shadow"].take() if r.path.startswith("/load/")]) == mirrored


# ---------------------------------------------------------------------------------------------
# Mirrors pending when their configuration is replaced

SAME = {"ok": True}
MIRRORING = {"mirror": {"cluster": "shadow", "timeout_ms": 30000}}


def wait_for_no_pending(e: harness.Envoy) -> None:
    # Not wait_for_metric: that one gives up as soon as the value is above the one awaited.
    harness.wait_until(lambda: e.metric(PENDING, {"canary_cluster": "shadow"}) == 0, 10, what="no mirror pending")


@pytest.fixture
def held_mirrors(envoy, upstream, tmp_path):
    """An Envoy mirroring to a shadow that holds every request until released, with N=6
    mirrors pending there. Returns (envoy, ecds, shadow responder, N)."""
    ecds = EcdsFile(tmp_path)
    ecds.push(MIRRORING)
    hold = harness.Delayed(120, harness.fixed(200, SAME))
    ups = {"primary": upstream("primary", harness.fixed(200, SAME)), "shadow": upstream("shadow", hold)}
    e = envoy(ecds_config(ecds, ups, {}))
    n = 6
    for i in range(n):
        assert e.request("GET", f"/held/{i}").status == 200
    harness.wait_until(lambda: len(ups["shadow"].received) == n, 10, what="the shadow holding every mirror")
    harness.wait_for_metric(e, PENDING, {"canary_cluster": "shadow"}, n)
    return e, ecds, hold, n


def test_mirrors_pending_at_a_push_are_still_compared(held_mirrors):
    """Istio's case: only the plugin's configuration changes, the VM stays. The retired
    configuration's root context lives on until its mirrors are concluded."""
    e, ecds, hold, n = held_mirrors
    version = ecds.push({**MIRRORING, "classification": {"default_class": "everyone"}})
    wait_for_stats(e, update_success=2, version_text=version)
    # The retired configurations (one per worker that had some) took all n along.
    harness.wait_until(lambda: sum(int(x) for x in RETIRED.findall(e.log())) == n, 10, what="retired lines")
    # Those mirrors left the pending gauge with their configuration.
    wait_for_no_pending(e)
    hold.stop()
    harness.wait_until(lambda: sum(harness.counts_by(e, COMPARISONS, "result").values()) >= n, 15, what=f"{n} results")
    assert harness.counts_by(e, COMPARISONS, "result") == {"match": n}
    # The new configuration mirrors too, counted on the same series and on its new class.
    assert e.request("GET", "/after").status == 200
    harness.wait_until(lambda: sum(harness.counts_by(e, COMPARISONS, "result").values()) >= n + 1, 15, what="one more")
    assert harness.counts_by(e, COMPARISONS, "result", user_class="everyone") == {"match": 1}
    assert harness.counts_by(e, MIRROR_TOTAL, "decision") == {"mirrored": n + 1}


def test_a_push_that_replaces_the_vm_loses_pending_mirrors_but_not_the_gauge(held_mirrors):
    """A different vm_config (in Istio: a new module) makes Envoy start new VMs and drop the
    old ones with whatever they had pending: those mirrors never get a result."""
    e, ecds, hold, n = held_mirrors
    version = ecds.push(MIRRORING, vm_id="another-vm")
    wait_for_stats(e, update_success=2, version_text=version)
    wait_for_no_pending(e)
    hold.stop()
    assert e.request("GET", "/after").status == 200
    harness.wait_until(lambda: harness.counts_by(e, COMPARISONS, "result"), 15, what="a result")
    # Envoy cancelled the old VM's callouts: the shadow's answers to them went nowhere.
    assert harness.counts_by(e, COMPARISONS, "result") == {"match": 1}
    assert harness.counts_by(e, MIRROR_TOTAL, "decision") == {"mirrored": n + 1}
    assert e.metric(PENDING, {"canary_cluster": "shadow"}) == 0


def test_a_request_in_flight_at_a_push_finishes_under_its_own_config(envoy, upstream, tmp_path):
    """A request that was classified and mirrored before the push, still waiting for the
    primary after it, completes through the filter instance it started with: its answer is
    compared by the old configuration, which Envoy keeps until that request has ended."""
    ecds = EcdsFile(tmp_path)
    ecds.push({**CONFIG_A, "mirror": {"cluster": "shadow"}})

    def echo_class(req: harness.Received):
        return 200, [("content-type", "application/json")], json.dumps({"class": req.header("x-user-class")}).encode()

    hold = harness.Delayed(120, echo_class)
    ups = {"primary": upstream("primary", hold), "shadow": upstream("shadow", echo_class)}
    # The new config's class goes to the shadow, so a new request is not held.
    e = envoy(ecds_config(ecds, ups, {"everyone": "shadow"}))
    answer: list[harness.Response] = []
    in_flight = threading.Thread(target=lambda: answer.append(e.request("GET", "/slow", [("x-beta", "1")], timeout=60)))
    in_flight.start()
    try:
        harness.wait_until(hold.started.is_set, 10, what="the primary holding the request")
        harness.wait_until(lambda: ups["shadow"].received, 10, what="its mirror at the shadow")
        version = ecds.push({"classification": {"default_class": "everyone"}, "mirror": {"cluster": "shadow"}})
        wait_for_stats(e, update_success=2, version_text=version)
        # Meanwhile new requests are the new config's.
        r = e.request("GET", "/new", [("x-beta", "1")])
        assert (r.status, r.json()) == (200, {"class": "everyone"})
    finally:
        hold.stop()
        in_flight.join(60)
    [r] = answer
    assert (r.status, r.json()) == (200, {"class": "beta"})
    harness.wait_until(lambda: harness.counts_by(e, COMPARISONS, "result", user_class="beta"), 10, what="its result")
    assert harness.counts_by(e, COMPARISONS, "result", user_class="beta") == {"match": 1}


# ---------------------------------------------------------------------------------------------
# Before the first good config


def test_before_a_first_good_config_every_request_gets_500(envoy, upstream, tmp_path):
    """The listener waits for the file's first config; if that one is refused, Envoy serves
    anyway, and without a `default_config` the filter answers 500 itself, with no body, until
    a good config arrives. A good config written into the file in place is not noticed."""
    ecds = EcdsFile(tmp_path)
    ecds.push(REFUSED_BY_FILTER)
    ups = {"primary": upstream("primary"), "canary": upstream("canary")}
    good = {"classification": CONFIG_A["classification"]}
    e = envoy(ecds_config(ecds, ups, TO_CANARY))
    wait_for_stats(e, update_rejected=1, update_success=0)
    r = e.request("GET", "/", [("x-beta", "1")])
    assert (r.status, r.body) == (500, b"")

    ecds.write_in_place(ecds.document(good))
    # A rename after it: once Envoy has failed on this one, it has had its chance at the write.
    ecds.push_text(NOT_YAML)
    wait_for_stats(e, update_failure=1)
    assert ecds_stats(e)["update_success"] == "0"
    assert e.request("GET", "/", [("x-beta", "1")]).status == 500
    assert [u.received for u in ups.values()] == [[], []]

    version = ecds.push(good)
    wait_for_stats(e, update_success=1, version_text=version)
    r = e.request("GET", "/", [("x-beta", "1")])
    assert (r.status, r.json()["upstream"], r.json()["x-user-class"]) == (200, "canary", "beta")
