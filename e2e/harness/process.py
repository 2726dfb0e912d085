"""Processes and waiting: free ports, starting and stopping, polling with a deadline."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
LOG_DIR = REPO / "e2e" / ".logs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as r:
        return r.status == 200


def wait_ready(proc: subprocess.Popen, ready: Callable[[], bool], what: str, log: Callable[[], str], timeout: float) -> None:
    """Polls `ready()` until it is true; fails with `what`'s log if the process exits or the
    time runs out (then it is stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}\n{log()}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    stop_process(proc)
    raise TimeoutError(f"{what} not ready after {timeout}s\n{log()}")


def wait_until(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, what: str = ""):
    """Polls `check` until it returns something truthy (returned) or `timeout` passes
    (AssertionError naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)


def read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def run_make(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`make ARGS` in the repository, as a user types it. The make running the tests (make e2e)
    leaves its flags and level in the environment; they are dropped so that this make behaves
    the same whether pytest was started by make or by hand."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
