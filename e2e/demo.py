"""`make run`: Envoy with envoy.yaml in front of a demo primary (:8081) and canary (:8082).

Each upstream answers with JSON naming itself and the x-user-class / x-features it received,
so curl shows classification at work. Ctrl-C stops everything.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import harness

PORTS = {"listener": 10000, "admin": 9901, "primary": 8081, "canary": 8082}

TRY = """
progressive-delivery demo: Envoy on :10000 (admin :9901), primary :8081, canary :8082.
Try (each answer names the upstream and the class it received):

  curl -s localhost:10000/                                  # stable   -> primary
  curl -s -H 'x-beta: true' localhost:10000/                # beta     -> canary, with x-features
  curl -s 'localhost:10000/?beta'                           # beta     -> canary (query rule)
  curl -s -b 'type=insider' localhost:10000/                # insider  -> canary (cookie rule)
  curl -s -A 'Mozilla/5.0 Firefox/120.0' localhost:10000/   # firefox  -> primary
  curl -s -H 'x-user-class: beta' localhost:10000/          # spoofed  -> stable, primary
  curl -si localhost:10000/ | grep -i set-cookie            # first visit: a sticky uid cookie
  curl -s localhost:9901/stats/prometheus | grep progressive_delivery

Ctrl-C stops Envoy and the upstreams.
"""


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def main() -> int:
    busy = [f"{what} :{port}" for what, port in PORTS.items() if not port_free(port)]
    if busy:
        print(f"make run: ports in use: {', '.join(busy)}; stop what holds them and retry", file=sys.stderr)
        return 1
    upstreams = [
        harness.Upstream("primary", port=PORTS["primary"]).start(),
        harness.Upstream("canary", port=PORTS["canary"]).start(),
    ]
    envoy = subprocess.Popen(
        [str(harness.ENVOY_BIN), "-c", "envoy.yaml", "--disable-hot-restart", "-l", "warn",
         "--component-log-level", "wasm:info"],
        cwd=harness.REPO,
    )
    try:
        # Envoy prints the filter's "configured" line; give the listener a moment, then help.
        for _ in range(100):
            if envoy.poll() is not None:
                return envoy.returncode or 1
            if not port_free(PORTS["listener"]):
                break
            envoy_wait(0.1, envoy)
        print(TRY, flush=True)
        return envoy.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if envoy.poll() is None:
            envoy.terminate()
            try:
                envoy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                envoy.kill()
        for up in upstreams:
            up.stop()


def envoy_wait(seconds: float, envoy: subprocess.Popen) -> None:
    try:
        envoy.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


if __name__ == "__main__":
    sys.exit(main())
