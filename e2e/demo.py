"""`make run`: Envoy with envoy.yaml in front of a demo primary (:8081) and canary (:8082).

Each upstream answers with JSON naming itself and the x-user-class / x-features it received,
so curl shows classification at work. Both also serve a small account API; the canary has a
bug in one endpoint (`GET /api/balance` answers 90 where the primary answers 100), which the
filter's mirror comparison reveals. Ctrl-C stops everything.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import harness

PORTS = {"listener": 10000, "admin": 9901, "primary": 8081, "canary": 8082}

def account_api(name: str, balance: int):
    """A responder: the account API under /api/, elsewhere the echo of the class headers."""

    def respond(req: harness.Received):
        path = req.path.split("?", 1)[0]
        if path == "/api/balance":
            body = {"account": "andrew", "balance": balance, "currency": "USD", "timestamp": time.time()}
        elif path == "/api/profile":
            body = {"account": "andrew", "timezone": "America/Denver", "timestamp": time.time()}
        elif path.startswith("/api/"):
            body = {"ok": True, "method": req.method, "path": path, "upstream": name}
        else:
            body = {
                "upstream": name,
                "method": req.method,
                "path": req.path,
                "x-user-class": req.header("x-user-class"),
                "x-features": req.header("x-features"),
            }
        return 200, [("content-type", "application/json")], json.dumps(body).encode()

    return respond


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

Mirroring: stable (and firefox) GETs, HEADs, PUTs... are copied to the canary and its answer
is compared with the primary's (JSON, ignoring /upstream and /timestamp). The canary has a bug
in /api/balance:

  curl -s localhost:10000/api/profile                       # same on both: match
  curl -s localhost:10000/api/balance                       # primary 100, canary 90: body_mismatch
  curl -s -X POST localhost:10000/api/accounts/andrew/debit # POST: never mirrored
  curl -s localhost:10000/api/logout                        # excluded path: not mirrored
  curl -s localhost:9901/stats/prometheus | grep -E 'progressive_delivery_(mirror|comparisons)_total' | grep -v ' 0$'

Envoy's log (below) names what differs:
  ... mirror mismatch: GET /api/balance class=stable result=body_mismatch: body /balance: 100 vs 90

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
        harness.Upstream("primary", account_api("primary", 100), port=PORTS["primary"]).start(),
        harness.Upstream("canary", account_api("canary", 90), port=PORTS["canary"]).start(),
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
