"""``coe serve`` as a child process on a free loopback port, for crash, drain and soak runs.

The child's output goes to a log file beside its config, so a failing test can show it. A child
offers no event to wait on: readiness is found by polling ``/healthz``, bounded in time. With
``workers`` (``server.workers``) the child is a supervisor whose workers it forks; the child runs
in its own process group, so ``stop`` kills the workers too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import tomli_w

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tests.upstream import UpstreamServer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class GatewayProcess:
    def __init__(
        self,
        config: dict[str, Any],
        folder: Path,
        *,
        name: str = "gateway",
        args: tuple[str, ...] = (),
        workers: int | None = None,
    ) -> None:
        self.port = free_port()
        self.config_path = folder / f"{name}.toml"
        self.log_path = folder / f"{name}.log"
        # No host unless the config names one: the default bind is under test too.
        server = {**config.get("server", {}), "port": self.port}
        if workers is not None:
            server["workers"] = workers
        self.config_path.write_text(tomli_w.dumps({**config, "server": server}))
        self._args = args
        self._workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 30) -> GatewayProcess:
        command = [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path),
                   "--log-level", "warning", *self._args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}: {self.log()}")
            if self.healthy():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not become healthy: {self.log()}")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        """Kill the child and its workers if still running (the end of every test, whatever
        happened)."""
        if self.process is None:
            return
        if self._workers is not None and self.process.poll() is None:
            # A supervisor asked to stop removes its metrics folder; SIGKILL would leave it.
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the group is gone
        if self.process.poll() is None:
            self.process.wait(timeout=10)

    def worker_pids(self) -> list[int]:
        """The supervisor's workers (its child processes), from /proc."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return sorted(int(pid) for pid in children)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def memory_kib(self) -> int:
        """Resident set size, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc status")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


ONE_TIER = ("small-a", "small-b", "small-c")


def one_tier_config(upstreams: Mapping[str, UpstreamServer], ledger_url: str) -> dict[str, Any]:
    """A unanimous one-tier sentiment route over the three small test upstreams, as `coe serve`
    reads it (the crash, budget and ledger-outage tests run it)."""
    return {
        "ledger": {"url": ledger_url},
        "endpoints": [
            {
                "name": name,
                "base_url": upstreams[name].base_url,
                "model": name,
                "max_retries": 0,
                "usd_per_mtok_in": 0.10,
                "usd_per_mtok_out": 0.20,
            }
            for name in ONE_TIER
        ],
        "routes": {
            "sentiment": {"labels": ["positive", "negative"], "threshold": 1, "tiers": [ONE_TIER]}
        },
    }
