"""Run the performance scenarios a–f in one run and write the figures into bench/RESULTS.md.

    .venv/bin/python -m bench.run            # every scenario, the sweep and memory (≥ 25 minutes)
    .venv/bin/python -m bench.run --quick    # a smoke run (about 3 minutes); figures are rough

``--scenarios b,d,…`` picks scenarios, ``--sweep ''`` skips the pinned sweep, ``--peer-rate 0`` the
50/s comparison and ``--memory-requests 0`` the memory check; bench/RESULTS.md names the command
of each recorded run.

Each run also writes its raw output to bench/results/<UTC start>-<host>.json (``-quick``,
``-memory`` for those runs): commit it with the block, so every figure there can be traced.

LiteLLM for scenario (c) lives in its own virtualenv (git-ignored through .git/info/exclude):
    .venv/bin/python -m venv bench/.venv-litellm
    bench/.venv-litellm/bin/pip install 'litellm[proxy]==1.108.7'

Everything runs on loopback: a fake upstream (bench/fake_upstream.py), the open-loop load generator
(bench/loadgen.py), the gateway as ``coe serve`` (one worker, SQLite ledger in a temporary folder)
and, for scenario (c), the LiteLLM proxy from bench/.venv-litellm. By default (``--no-pin`` turns
it off; only on machines with two or more cores) the system under test (gateway or LiteLLM) runs
on CPU 1 and the harness (fake upstream, load generator) on CPU 0, so they do not take each
other's time slices.

Overhead is the latency the gateway adds: at each quantile, the scenario's latency minus the
direct latency of the upstream calls its answer had to wait for, measured in the same run (scenario
a and its 50 ms / 500 ms variants). ``--variant NAME=ARGS`` runs (b) and (d) again for each variant
of the gateway (see bench/serve_variant.py), side by side, for the A/B record; with
``--variant-rounds N`` the variants take turns N times. ``--workers 1,2`` sweeps (d) on
``coe serve --workers N`` with nothing pinned (``run_workers_sweep``). CPU is the system under
test's, with every process it forked.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

import orjson

from bench.loadgen import MEASURING

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
LITELLM_VENV = BENCH / ".venv-litellm"
COE_SERVE = [str(Path(PYTHON).parent / "coe"), "serve"]
RESULTS = BENCH / "RESULTS.md"
ARCHIVE = BENCH / "results"  # committed raw output: one JSON per run, next to the block it wrote
BEGIN, END = "<!-- bench/run.py: begin -->", "<!-- bench/run.py: end -->"
PROMPT = "Great film, I would watch it again!"
HOST = "127.0.0.1"

# Fake upstream ports and their scripts.
DIRECT_0, DIRECT_50, DIRECT_500 = 9100, 9111, 9113
UPSTREAMS = [
    "port=9100,answer=positive",  # (a), (b), (c)
    "port=9101,answer=positive",  # (d): three agreeing members
    "port=9102,answer=positive",
    "port=9103,answer=positive",
    "port=9111,delay_ms=50,answer=positive",  # (e): the fast pair and the slow one
    "port=9112,delay_ms=50,answer=positive",
    "port=9113,delay_ms=500,answer=positive",
    "port=9121,answer=positive",  # (f): tier 0 splits on '#split' …
    "port=9122,answer=positive,split=neutral",
    "port=9123,answer=negative",
    "port=9124,answer=positive",  # … and tier 1 answers
]
GATEWAY_PORT, LITELLM_PORT, FLOOR_PORT = 8300, 8400, 8310


def gateway_config(port: int, ledger_dir: Path) -> str:
    endpoints = {
        "u0": 9100, "e1": 9101, "e2": 9102, "e3": 9103, "fast1": 9111, "fast2": 9112,
        "slow": 9113, "c1": 9121, "c2": 9122, "c3": 9123, "big": 9124,
    }
    lines = [
        f'[server]\nhost = "{HOST}"\nport = {port}\n',
        f'[ledger]\nurl = "sqlite:///{ledger_dir}/coe.db"\n',
    ]
    for name, upstream in endpoints.items():
        lines.append(
            f'[[endpoints]]\nname = "{name}"\nkind = "openai"\n'
            f'base_url = "http://{HOST}:{upstream}/v1"\nmodel = "fake"\n'
            "usd_per_mtok_in = 0.1\nusd_per_mtok_out = 0.2\n"
            # The default (64) caps a 500 ms endpoint at 128 calls/s: (e-all) offers 200.
            "max_concurrency = 512\n"
        )
    routes = {
        "plain": ('[["u0"]]', ""),
        "ensemble": ('[["e1", "e2", "e3"]]', ""),
        "slow-quorum": ('[["fast1", "fast2", "slow"]]', ""),
        "slow-all": ('[["fast1", "fast2", "slow"]]', "wait_for_all = true\n"),
        "cascade": ('[["c1", "c2", "c3"], ["big"]]', ""),
    }
    for name, (tiers, extra) in routes.items():
        lines.append(
            f'[routes.{name}]\nlabels = ["positive", "negative"]\nthreshold = "2/3"\n'
            f"tiers = {tiers}\n{extra}"
        )
    return "\n".join(lines)


LITELLM_CONFIG = f"""model_list:
  - model_name: plain
    litellm_params:
      model: openai/fake
      api_base: http://{HOST}:{DIRECT_0}/v1
      api_key: sk-fake
litellm_settings:
  telemetry: false
"""
# LiteLLM logs every request through uvicorn's access log by default; the gateway does not.
LITELLM_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"uvicorn.access": {"level": "WARNING"}, "uvicorn.error": {"level": "WARNING"}},
}


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    title: str
    route: str | None  # None: straight to the upstream
    waits_for: tuple[str, ...]  # the direct baselines the answer waits for, in sequence
    split_every: int = 0
    target: str = "gateway"  # gateway | litellm | direct | floor-proxy | floor-answer


@dataclass(slots=True)
class Measured:
    scenario: Scenario
    rate: float
    result: dict[str, Any]
    cpu_s: float | None = None
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    steal: float | None = None  # share of the machine's CPU time the hypervisor took, in %
    extra: dict[str, Any] = field(default_factory=dict)


DIRECT = {
    "a": Scenario("a", "direct to the upstream (0 ms)", None, ()),
    "a50": Scenario("a50", "direct to the upstream (50 ms)", None, ()),
    "a500": Scenario("a500", "direct to the upstream (500 ms)", None, ()),
}
SCENARIOS = [
    Scenario("b", "gateway, 1 endpoint", "plain", ("a",)),
    Scenario("c", "LiteLLM proxy, 1 endpoint", "plain", ("a",), target="litellm"),
    Scenario("b-floor", "floor: bare uvicorn + aiohttp proxy, no gateway logic", "plain", ("a",),
             target="floor-proxy"),
    Scenario("b-answer", "floor: bare uvicorn app, fixed answer, no upstream", "plain", (),
             target="floor-answer"),
    Scenario("d", "gateway, 3 endpoints, θ=2/3, agreeing", "ensemble", ("a",)),
    Scenario("e", "gateway, 50/50/500 ms, early quorum", "slow-quorum", ("a50",)),
    Scenario("e-all", "gateway, 50/50/500 ms, wait_for_all", "slow-all", ("a500",)),
    Scenario("f", "gateway, 2 tiers, half escalate", "cascade", ("a",), split_every=2),
]


class Harness:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.pin = args.pin and (os.cpu_count() or 1) >= 2
        self.upstream_pid: int | None = None

    def _taskset(self, cpu: int) -> list[str]:
        return ["taskset", "-c", str(cpu)] if self.pin and shutil.which("taskset") else []

    def start(
        self, name: str, command: list[str], cpu: int | None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` on CPU ``cpu`` (None: wherever the kernel schedules it)."""
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            (self._taskset(cpu) if cpu is not None else []) + command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(reversed(self.processes)):
            self.stop(process)

    def loadgen(
        self, port: int, path: str, model: str, rate: float, requests: int, *,
        warmup: int, split_every: int = 0, headers: tuple[str, ...] = (), pinned: bool = True,
        on_measuring: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Run bench/loadgen.py; ``on_measuring`` is called once its warm-up is over."""
        body = orjson.dumps(
            {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4}
        ).decode()
        command = (self._taskset(0) if pinned else []) + [
            PYTHON, "-m", "bench.loadgen", "--url", f"http://{HOST}:{port}{path}",
            "--rate", str(rate), "--requests", str(requests), "--warmup", str(warmup),
            "--body", body, "--split-every", str(split_every),
        ]
        for header in headers:
            command += ["--header", header]
        with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as process:
            assert process.stderr is not None
            first = process.stderr.readline()
            if on_measuring is not None and first.strip() == MEASURING.encode():
                on_measuring()
            stdout, stderr = process.communicate(timeout=3600)
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, command, stdout, first + stderr)
        result: dict[str, Any] = orjson.loads(stdout)
        return result


def wait_http(url: str, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before {url}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {timeout_s} s")


def accepted_connections(log: Path) -> dict[str, int]:
    for line in log.read_text().splitlines():
        if line.startswith("accepted "):
            counts: dict[str, int] = orjson.loads(line.removeprefix("accepted "))
            return counts
    return {}


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and every live process under it: a server that forks workers
    (``coe serve --workers N``, granian) is measured whole."""
    return sum(tree_cpu_seconds(pid).values())


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time of ``pid`` and of each live process under it, by process id."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree: dict[int, float] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        tree[current] = ticks.get(current, 0) / os.sysconf("SC_CLK_TCK")
        todo += [child for child, parent in parents.items() if parent == current]
    return tree


def stolen_jiffies() -> tuple[int, int]:
    """The machine's (steal, total) CPU jiffies so far: on a shared VM the hypervisor's share
    explains figures that moved without a change to the code."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    steal = fields[7] if len(fields) > 7 else 0
    # guest and guest_nice (fields 8 and 9) are already counted in user and nice.
    return steal, sum(fields[:8])


def steal_percent(before: tuple[int, int]) -> float | None:
    steal, total = stolen_jiffies()
    elapsed = total - before[1]
    return 100.0 * (steal - before[0]) / elapsed if elapsed > 0 else None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_gateway(
    h: Harness, name: str, port: int, command: list[str], cpu: int | None = 1,
    extra: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """``command`` with the run's config and ``--log-level warning``, then ``extra`` (a
    variant's arguments, which may set the log level again)."""
    ledger = h.workdir / f"ledger-{name}"
    ledger.mkdir()
    config = h.workdir / f"{name}.toml"
    config.write_text(gateway_config(port, ledger))
    arguments = [*command, "--config", str(config), "--log-level", "warning", *(extra or [])]
    process = h.start(name, arguments, cpu=cpu)
    wait_http(f"http://{HOST}:{port}/healthz", 30, process)
    return process


def measure(
    h: Harness, scenario: Scenario, rate: float, requests: int, *,
    port: int, pid: int | None, upstream_port: int = DIRECT_0, pinned: bool = True,
) -> Measured:
    # Taken when the warm-up is over, so CPU and steal cover the recorded requests only.
    start: dict[str, Any] = {}

    def measuring() -> None:
        start.update(load=os.getloadavg(), stolen=stolen_jiffies(),
                     cpu=cpu_seconds(pid) if pid else None)

    if scenario.target == "direct":
        result = h.loadgen(upstream_port, "/v1/chat/completions", "fake", rate, requests,
                           warmup=h.args.warmup, on_measuring=measuring)
    else:
        result = h.loadgen(port, "/v1/chat/completions", scenario.route or "", rate, requests,
                           warmup=h.args.warmup, split_every=scenario.split_every,
                           pinned=pinned, on_measuring=measuring)
    before = start.get("cpu")
    cpu = cpu_seconds(pid) - before if pid and before is not None else None
    measured = Measured(scenario, rate, result, cpu, start.get("load", os.getloadavg()),
                        steal_percent(start["stolen"]) if "stolen" in start else None)
    print(f"  {scenario.key:6} {rate:6.0f}/s  {summary_line(measured)}; CPU/req "
          f"{cpu_per_request(measured)} ms", flush=True)
    return measured


def summary_line(m: Measured) -> str:
    lat = m.result.get("latency_ms", {})
    text = " ".join(f"{k} {lat[k]:.2f}" for k in ("p50", "p90", "p99", "max") if k in lat)
    fails = m.result["sent"] - m.result["ok"]
    return f"{text} ms; achieved {m.result['achieved_rate']:.0f}/s; not ok {fails}"


def overhead(m: Measured, baselines: dict[str, Measured], quantile: str,
             part: str = "latency_ms", waits: tuple[str, ...] | None = None) -> float | None:
    lat = m.result.get(part, {})
    if quantile not in lat:
        return None
    base = 0.0
    for key in waits if waits is not None else m.scenario.waits_for:
        base += baselines[key].result["latency_ms"][quantile]
    return float(lat[quantile]) - base


def versions() -> dict[str, str]:
    found = {}
    for name in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "httpx", "httpcore",
                 "httpx-aiohttp", "aiohttp", "anyio", "orjson", "pydantic", "granian"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    litellm_python = LITELLM_VENV / "bin" / "python"
    if litellm_python.exists():
        done = subprocess.run(
            [str(litellm_python), "-c",
             "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True, text=True, check=False,
        )
        found["litellm (own venv)"] = done.stdout.strip() or "?"
    return found


def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError):
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split(":")[1].strip()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit + (" + uncommitted changes" if dirty else ""),
    }


def start_upstream(h: Harness) -> subprocess.Popen[bytes]:
    upstream = h.start(
        "upstream", [PYTHON, "-m", "bench.fake_upstream",
                     *[a for s in UPSTREAMS for a in ("--endpoint", s)]], cpu=0,
    )
    for script in UPSTREAMS:
        wait_port(int(script.split(",")[0].split("=")[1]), 10)
    return upstream


def run_memory_only(args: argparse.Namespace) -> dict[str, Any]:
    """The memory check alone, at ``--memory-rate``: what a run's block does not rewrite."""
    workdir = Path(tempfile.mkdtemp(prefix="coe-bench-"))
    h = Harness(args, workdir)
    try:
        start_upstream(h)
        stolen = stolen_jiffies()
        memory = run_memory(h, args, [], {})
        memory["steal_percent"] = steal_percent(stolen)
        return memory
    finally:
        h.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="coe-bench-"))
    h = Harness(args, workdir)
    rate = args.rate
    count = int(rate * args.duration)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(PYTHON).name, "-m", "bench.run",
                                                        *sys.argv[1:]]),
        "machine": machine(),
        "versions": versions(),
        "pinned": h.pin,
        "rate": rate,
        "requests": count,
        "warmup": args.warmup,
        "load_before": os.getloadavg(),
    }
    print(f"workdir {workdir}; load {report['load_before']}", flush=True)
    try:
        upstream = start_upstream(h)
        report["upstream_pid"] = h.upstream_pid = upstream.pid

        chosen = [s for s in SCENARIOS if s.key in args.scenarios]
        needed = {"a"} | {key for s in chosen for key in s.waits_for}
        baselines: dict[str, Measured] = {}
        print("direct baselines", flush=True)
        for key, port in (("a", DIRECT_0), ("a50", DIRECT_50), ("a500", DIRECT_500)):
            if key not in needed:
                continue
            scenario = Scenario(key, DIRECT[key].title, None, (), target="direct")
            n = count if key == "a" else max(200, count // 2)
            baselines[key] = measure(h, scenario, rate, n, port=0, pid=None, upstream_port=port)

        results: list[Measured] = []
        gateway = start_gateway(h, "gateway", GATEWAY_PORT, COE_SERVE)
        print("scenarios", flush=True)
        for scenario in chosen:
            n = count if scenario.key != "e-all" else max(200, count // 2)
            results.append(run_scenario(h, scenario, rate, n, gateway))
        report["gateway_rss_mib_after_scenarios"] = rss_mib(gateway.pid)

        peer: list[Measured] = []
        if args.peer_rate:
            # At 200/s LiteLLM saturates one core; compare again where it keeps up.
            print(f"peer comparison at {args.peer_rate:.0f}/s", flush=True)
            n = int(args.peer_rate * args.duration)
            direct = Scenario("a", DIRECT["a"].title, None, (), target="direct")
            peer.append(measure(h, direct, args.peer_rate, n, port=0, pid=None))
            for key in ("b", "c", "b-floor"):
                scenario = next(s for s in SCENARIOS if s.key == key)
                peer.append(run_scenario(h, scenario, args.peer_rate, n, gateway))

        print("throughput sweep (d)", flush=True)
        sweep: list[Measured] = []
        ensemble = next(s for s in SCENARIOS if s.key == "d")
        for step in args.sweep:
            m = measure(h, ensemble, step, int(step * args.sweep_seconds),
                        port=GATEWAY_PORT, pid=gateway.pid)
            sweep.append(m)
            p99 = overhead(m, baselines, "p99")
            if (p99 is None or p99 > 10.0 or m.result["ok"] < m.result["sent"]
                    or m.result["achieved_rate"] < 0.95 * step):
                break
        h.stop(gateway)

        scaling = [
            m for workers in args.workers for m in run_workers_sweep(h, args, workers, baselines)
        ]

        variants = []
        # Rounds interleave the variants (A B C, A B C, …): on a shared machine a disturbance
        # then falls on one round of each rather than on all of one variant.
        for round_ in range(args.variant_rounds if args.variant else 0):
            for spec in args.variant:
                name, _, extra = spec.partition("=")
                print(f"variant {name} (round {round_ + 1}): {extra}", flush=True)
                command = [PYTHON, "-m", "bench.serve_variant"]
                process = start_gateway(h, f"variant-{name}-{round_}", GATEWAY_PORT, command,
                                        extra=shlex.split(extra))
                for key in args.variant_scenarios:
                    scenario = next(s for s in SCENARIOS if s.key == key)
                    m = measure(h, scenario, rate, count, port=GATEWAY_PORT, pid=process.pid)
                    m.extra["variant"] = name
                    m.extra["round"] = round_ + 1
                    variants.append(m)
                h.stop(process)

        memory: dict[str, Any] = {}
        if args.memory_requests:
            memory = run_memory(h, args, sweep, baselines)
        h.stop(upstream)
        report["upstream_connections"] = accepted_connections(workdir / "upstream.log")
        report["load_after"] = os.getloadavg()
        report["baselines"] = {k: dump(m) for k, m in baselines.items()}
        report["scenarios"] = [dump(m) for m in results]
        report["sweep"] = [dump(m) for m in sweep]
        report["variants"] = [dump(m) for m in variants]
        report["workers"] = [dump(m) for m in scaling]
        report["memory"] = memory
        report["peer"] = [dump(m) for m in peer]
        report["_objects"] = (baselines, results, sweep, variants, peer, scaling)
        return report
    finally:
        h.stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def run_workers_sweep(
    h: Harness, args: argparse.Namespace, workers: int, baselines: dict[str, Measured]
) -> list[Measured]:
    """(d) at rising rates on ``coe serve --workers N``, until it no longer keeps up.

    The gateway and the load generator are not pinned here, for every N alike: with two workers
    on a 2-core machine the gateway needs both cores, so it shares them with the harness (the
    fake upstream stays on CPU 0, as in the rest of the run), and one worker does so equally.
    Each row carries the harness's CPU per request: the share of the machine the gateway could
    not have."""
    print(f"workers {workers}: sweep (d)", flush=True)
    ensemble = next(s for s in SCENARIOS if s.key == "d")
    command = [*COE_SERVE, "--workers", str(workers)]
    gateway = start_gateway(h, f"gateway-workers-{workers}", GATEWAY_PORT, command, cpu=None)
    upstream_pid = h.upstream_pid
    rows: list[Measured] = []
    try:
        for step in args.workers_sweep:
            harness_before = cpu_seconds(upstream_pid) if upstream_pid else None
            processes_before = tree_cpu_seconds(gateway.pid)
            m = measure(h, ensemble, step, int(step * args.sweep_seconds), port=GATEWAY_PORT,
                        pid=gateway.pid, pinned=False)
            m.extra["workers"] = workers
            # Per process (supervisor and workers, warm-up included): how evenly they shared.
            m.extra["process_cpu_s"] = {
                str(p): round(cpu - processes_before.get(p, 0.0), 2)
                for p, cpu in tree_cpu_seconds(gateway.pid).items()
            }
            if upstream_pid and harness_before is not None:
                m.extra["harness_cpu_s"] = (
                    cpu_seconds(upstream_pid) - harness_before + m.result["generator_cpu_s"]
                )
            rows.append(m)
            # On past a p99 over 10 ms (one disturbance on a shared machine makes one), up to
            # the rate the gateway no longer sustains.
            if not sustained(m, baselines):
                break
    finally:
        h.stop(gateway)
    return rows


def sustained(m: Measured, baselines: dict[str, Measured]) -> bool:
    """Every request answered, at ≥ 95 % of the rate asked, with p50 overhead ≤ 5 ms."""
    p50 = overhead(m, baselines, "p50")
    return (p50 is not None and p50 <= 5.0 and m.result["ok"] == m.result["sent"]
            and m.result["achieved_rate"] >= 0.95 * m.rate)


def run_scenario(h: Harness, scenario: Scenario, rate: float, count: int,
                 gateway: subprocess.Popen[bytes]) -> Measured:
    """``count`` requests of ``scenario`` at ``rate`` on its system under test: the running
    gateway, or LiteLLM or the floor, each started for the scenario and stopped after it."""
    if scenario.target == "litellm":
        return run_litellm(h, scenario, rate, count)
    if scenario.target.startswith("floor-"):
        return run_floor(h, scenario, rate, count)
    return measure(h, scenario, rate, count, port=GATEWAY_PORT, pid=gateway.pid)


def run_litellm(h: Harness, scenario: Scenario, rate: float, count: int) -> Measured:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        print("  c      skipped: bench/.venv-litellm has no litellm", flush=True)
        return Measured(scenario, rate, {"skipped": "no bench/.venv-litellm", "sent": 0, "ok": 0,
                                         "achieved_rate": 0.0})
    config = h.workdir / "litellm.yaml"
    config.write_text(LITELLM_CONFIG)
    log_config = h.workdir / "litellm-logging.json"
    log_config.write_bytes(orjson.dumps(LITELLM_LOG_CONFIG))
    process = h.start(
        "litellm",
        [str(binary), "--config", str(config), "--host", HOST, "--port", str(LITELLM_PORT),
         "--num_workers", "1", "--log_config", str(log_config)],
        cpu=1,
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
             "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"},
    )
    try:
        wait_http(f"http://{HOST}:{LITELLM_PORT}/health/liveliness", 120, process)
        return measure(h, scenario, rate, count, port=LITELLM_PORT, pid=process.pid)
    finally:
        h.stop(process)


def run_floor(h: Harness, scenario: Scenario, rate: float, count: int) -> Measured:
    mode = scenario.target.removeprefix("floor-")
    process = h.start(
        f"floor-{mode}",
        [PYTHON, "-m", "bench.floor_app", "--port", str(FLOOR_PORT), "--mode", mode,
         "--upstream", f"http://{HOST}:{DIRECT_0}/v1"],
        cpu=1,
    )
    try:
        wait_http(f"http://{HOST}:{FLOOR_PORT}/healthz", 30, process)
        return measure(h, scenario, rate, count, port=FLOOR_PORT, pid=process.pid)
    finally:
        h.stop(process)


def run_memory(h: Harness, args: argparse.Namespace, sweep: list[Measured],
               baselines: dict[str, Measured]) -> dict[str, Any]:
    passing = [
        m.rate for m in sweep
        if (overhead(m, baselines, "p99") or 1e9) <= 10.0 and m.result["ok"] == m.result["sent"]
    ]
    rate = args.memory_rate or max(100.0, 0.8 * max(passing, default=args.rate))
    print(f"memory: {args.memory_requests} requests on (d) at {rate:.0f}/s", flush=True)
    gateway = start_gateway(h, "gateway-memory", GATEWAY_PORT, COE_SERVE)
    try:
        body_route = "ensemble"
        first = args.memory_requests // 10
        rss0 = rss_mib(gateway.pid)
        r1 = h.loadgen(GATEWAY_PORT, "/v1/chat/completions", body_route, rate, first, warmup=0)
        rss1 = rss_mib(gateway.pid)
        r2 = h.loadgen(GATEWAY_PORT, "/v1/chat/completions", body_route, rate,
                       args.memory_requests - first, warmup=0)
        rss2 = rss_mib(gateway.pid)
    finally:
        h.stop(gateway)
    memory = {
        "rate": rate, "rss_start_mib": rss0, "after_requests": [first, args.memory_requests],
        "rss_mib": [rss1, rss2], "growth": rss2 / rss1 - 1.0,
        "not_ok": (r1["sent"] - r1["ok"]) + (r2["sent"] - r2["ok"]),
        "latency_ms_last": r2["latency_ms"],
    }
    print(f"  RSS {rss0:.1f} MiB at start, {rss1:.1f} after {first}, {rss2:.1f} after "
          f"{args.memory_requests} ({memory['growth'] * 100:+.1f} %)", flush=True)
    return memory


def dump(m: Measured) -> dict[str, Any]:
    return {"key": m.scenario.key, "title": m.scenario.title, "rate": m.rate, "cpu_s": m.cpu_s,
            "load": m.load, "steal_percent": m.steal, **m.extra, "result": m.result}


TABLE_HEAD = (
    "| scenario | p50 ms | p90 ms | p99 ms | max ms | overhead p50 | overhead p99 | "
    "achieved /s | not ok | CPU ms/req | load 1 min | steal % |"
)
TABLE_RULE = "|---|---|---|---|---|---|---|---|---|---|---|---|"


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render(report: dict[str, Any]) -> str:
    baselines, results, sweep, variants, peer, scaling = report["_objects"]
    out = [BEGIN, "", f"## Latest run ({report['started']})", ""]
    m = report["machine"]
    out += [
        f"- Machine: {m['cpu']}, {m['memory']} RAM, Linux {m['kernel']}, Python {m['python']}; "
        f"commit {m['commit']}.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
        f"- Command: `{report['command']}`; load average before "
        f"{'/'.join(f'{x:.2f}' for x in report['load_before'])}, after "
        f"{'/'.join(f'{x:.2f}' for x in report['load_after'])} (1/5/15 min).",
        f"- {report['requests']} requests per scenario at {report['rate']:.0f} requests/s "
        f"(open loop) after {report['warmup']} warm-up requests; system under test "
        + ("pinned to CPU 1, harness to CPU 0." if report["pinned"] else "not pinned."),
        f"- Raw output: `{report['raw_output']}`.",
        "",
        *acceptance(report),
        "Latency is measured by the load generator (send to last byte); percentiles are "
        "gateway.stats.percentile (linear between closest ranks, numpy's default). Overhead = "
        "latency − the direct latency of the upstream calls the answer waited for, at the same "
        "quantile "
        "(baselines below; (f) escalated requests wait for two calls in sequence). "
        "CPU = the system under test's CPU time per request. Steal = the share of the machine's "
        "CPU time the hypervisor gave to other guests during the scenario (/proc/stat): where it "
        "is high, every figure of that row is inflated.",
        "",
        TABLE_HEAD,
        TABLE_RULE,
    ]
    for b in baselines.values():
        out.append(row(b, None, baselines))
    for r in results:
        out.append(row(r, overhead, baselines))
        if r.scenario.split_every:
            out.append(split_row(r, baselines))
    out.append("")
    litellm = next((r for r in results if r.scenario.key == "c"), None)
    plain = next((r for r in results if r.scenario.key == "b"), None)
    ensemble = next((r for r in results if r.scenario.key == "d"), None)
    if litellm and plain and "latency_ms" in litellm.result:
        for label, mine in (("(b)", plain), ("(d)", ensemble)):
            if mine is None:
                continue
            parts = []
            for q in ("p50", "p99"):
                theirs = overhead(litellm, baselines, q)
                ours = overhead(mine, baselines, q)
                if theirs and ours is not None:
                    parts.append(f"{q} {ours:.2f} / {theirs:.2f} ms = {ours / theirs:.2f}")
            out.append(f"- Overhead {label} / LiteLLM (c): " + "; ".join(parts) + ".")
    floor = next((r for r in results if r.scenario.key == "b-floor"), None)
    if floor and plain and "latency_ms" in floor.result:
        parts = []
        for q in ("p50", "p99"):
            ours, bare = overhead(plain, baselines, q), overhead(floor, baselines, q)
            if ours is not None and bare is not None:
                parts.append(f"{q} {ours:.2f} vs {bare:.2f} ms")
        cpu_ours, cpu_bare = cpu_per_request(plain), cpu_per_request(floor)
        out.append("- Overhead (b) vs the bare uvicorn + aiohttp floor: " + "; ".join(parts)
                   + f"; CPU {cpu_ours} vs {cpu_bare} ms/request.")
    early = next((r for r in results if r.scenario.key == "e"), None)
    if early and "latency_ms" in early.result:
        fast = baselines["a50"].result["latency_ms"]["p50"]
        mine = early.result["latency_ms"]["p50"]
        out.append(f"- (e) early quorum p50 {mine:.2f} ms vs the fast pair's direct p50 "
                   f"{fast:.2f} ms: {mine - fast:+.2f} ms.")
    escalating = next((r for r in results if r.scenario.key == "f"), None)
    if escalating and "latency_ms" in escalating.result:
        out.append(f"- (f) escalated {escalating.result['escalated']} of "
                   f"{escalating.result['sent']} requests.")
    if peer:
        at = {"a": peer[0]}
        out += ["", f"### (b), (c) and the floor again at {peer[0].rate:.0f} requests/s, where "
                "LiteLLM keeps up", "", TABLE_HEAD, TABLE_RULE]
        out += [row(m, overhead if m.scenario.target != "direct" else None, at) for m in peer]
        mine, theirs = (next((m for m in peer if m.scenario.key == k), None) for k in ("b", "c"))
        if mine and theirs and "latency_ms" in theirs.result:
            parts = []
            for q in ("p50", "p99"):
                o_mine, o_theirs = overhead(mine, at, q), overhead(theirs, at, q)
                if o_mine is not None and o_theirs:
                    parts.append(f"{q} {o_mine:.2f} / {o_theirs:.2f} ms = {o_mine / o_theirs:.2f}")
            out += ["", "- Overhead (b) / LiteLLM (c): " + "; ".join(parts) + "."]
    if sweep:
        out += ["", "### Throughput sweep, scenario (d)", "",
                "| target /s | achieved /s | p50 ms | p99 ms | overhead p99 | not ok | "
                "CPU ms/req | max send lag ms | steal % |", "|---|---|---|---|---|---|---|---|---|"]
    for s in sweep:
        lat = s.result.get("latency_ms", {})
        out.append(
            f"| {s.rate:.0f} | {s.result['achieved_rate']:.0f} | {fmt(lat.get('p50'))} | "
            f"{fmt(lat.get('p99'))} | {fmt(overhead(s, baselines, 'p99'))} | "
            f"{s.result['sent'] - s.result['ok']} | {cpu_per_request(s)} | "
            f"{s.result['max_send_lag_ms']:.1f} | {fmt(s.steal, 0)} |"
        )
    if scaling:
        out += workers_table(scaling, baselines)
    if variants:
        out += variants_tables(variants, baselines)
    if report["upstream_connections"]:
        counts = ", ".join(f"{k}: {v}" for k, v in report["upstream_connections"].items())
        out += ["", "Connections the fake upstream accepted over the whole run, per port (the "
                "gateway's pool reuses them; early quorum closes the slow call's, port 9113): "
                + counts + "."]
    memory = report["memory"]
    if memory:
        first, last = memory["after_requests"]
        out += ["", "### Memory, scenario (d) on a fresh gateway", "",
                f"RSS {memory['rss_start_mib']:.1f} MiB at start, {memory['rss_mib'][0]:.1f} MiB "
                f"after {first:,} requests, {memory['rss_mib'][1]:.1f} MiB after {last:,} "
                f"({memory['growth'] * 100:+.1f} %), at {memory['rate']:.0f} requests/s; "
                f"{memory['not_ok']} not ok."]
    out += ["", END]
    return "\n".join(out)


def acceptance(report: dict[str, Any]) -> list[str]:
    """Issue 15's acceptance ratios, each from rows of this run (none where a row is missing)."""
    baselines, results, _, _, peer, scaling = report["_objects"]
    found = {m.scenario.key: m for m in results}
    lines = []
    plain, floor = found.get("b"), found.get("b-floor")
    if plain and floor:
        ours, bare = overhead(plain, baselines, "p50"), overhead(floor, baselines, "p50")
        if ours is not None and bare:
            lines.append(f"(b) overhead p50 {ours:.2f} ms = {ours / bare:.2f}× the floor's "
                         f"{bare:.2f} ms (target ≤ 1.5×)")
        if plain.cpu_s and floor.cpu_s:
            ratio = (plain.cpu_s / plain.result["sent"]) / (floor.cpu_s / floor.result["sent"])
            lines.append(f"(b) CPU per request {cpu_per_request(plain)} ms = {ratio:.2f}× the "
                         f"floor's {cpu_per_request(floor)} ms (target ≤ 1.6×)")
    at = {m.scenario.key: m for m in peer}
    if "b" in at and "c" in at and "a" in at and "latency_ms" in at["c"].result:
        ours = overhead(at["b"], {"a": at["a"]}, "p50")
        theirs = overhead(at["c"], {"a": at["a"]}, "p50")
        if ours is not None and theirs:
            lines.append(f"at {at['b'].rate:.0f}/s, (b) overhead p50 {ours:.2f} ms = "
                         f"{ours / theirs:.2f}× LiteLLM's {theirs:.2f} ms (target ≤ 0.2×)")
    kept: dict[int, float] = {}
    for m in scaling:
        p99 = overhead(m, baselines, "p99")
        if sustained(m, baselines) and p99 is not None and p99 <= 10.0:
            kept[m.extra["workers"]] = max(kept.get(m.extra["workers"], 0.0), m.rate)
    if 1 in kept and 2 in kept:
        lines.append(f"(d) with p99 overhead ≤ 10 ms: {kept[2]:.0f}/s on two workers = "
                     f"{kept[2] / kept[1]:.2f}× the {kept[1]:.0f}/s of one (target ≥ 1.7×)")
    elif scaling:
        held = ", ".join(f"{w} worker(s) {kept[w]:.0f}/s" if w in kept else f"{w} worker(s) none"
                         for w in sorted({m.extra["workers"] for m in scaling}))
        lines.append(f"(d) highest rate with p99 overhead ≤ 10 ms: {held} (target: two workers "
                     "≥ 1.7× one)")
    memory = report["memory"]
    if memory:
        lines.append(f"RSS growth from {memory['after_requests'][0]:,} to "
                     f"{memory['after_requests'][1]:,} requests: {memory['growth'] * 100:+.1f} % "
                     "(target ≤ 10 %)")
    if not lines:
        return []
    return ["Issue 15's acceptance, from the rows below:", "", *[f"- {x}." for x in lines], ""]


def variants_tables(variants: list[Measured], baselines: dict[str, Measured]) -> list[str]:
    """Each variant's rows, and, over the rounds, the median of its CPU per request and of its
    CPU ratio to the first variant measured in the same round (the pair closest in time)."""
    reference_name = variants[0].extra["variant"]
    reference = {(v.extra["round"], v.scenario.key): v for v in variants
                 if v.extra["variant"] == reference_name}

    def ratio(v: Measured) -> float | None:
        ref = reference.get((v.extra["round"], v.scenario.key))
        if ref is None or not v.cpu_s or not ref.cpu_s or not v.result["sent"]:
            return None
        sent, ref_sent = int(v.result["sent"]), int(ref.result["sent"])
        return (v.cpu_s / sent) / (ref.cpu_s / ref_sent)

    out = ["", "### Variants (bench/serve_variant.py), same run", "",
           f"CPU ratio: the variant's CPU per request over that of `{reference_name}` in the "
           "same round and scenario. Medians over the rounds:", "",
           "| variant | scenario | rounds | CPU ms/req | CPU ratio | overhead p50 ms | "
           "overhead p99 ms |", "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[Measured]] = {}
    for v in variants:
        groups.setdefault((v.extra["variant"], v.scenario.key), []).append(v)
    for (name, key), rows in groups.items():
        cpus = [v.cpu_s / v.result["sent"] * 1000 for v in rows if v.cpu_s and v.result["sent"]]
        ratios = [r for r in map(ratio, rows) if r is not None]
        o50 = [o for o in (overhead(v, baselines, "p50") for v in rows) if o is not None]
        o99 = [o for o in (overhead(v, baselines, "p99") for v in rows) if o is not None]
        out.append(
            f"| {name} | {key} | {len(rows)} | {fmt(median(cpus) if cpus else None)} | "
            f"{fmt(median(ratios) if ratios else None)} | {fmt(median(o50) if o50 else None)} | "
            f"{fmt(median(o99) if o99 else None)} |"
        )
    out += ["", "Every round:", "",
            "| variant | round | scenario | p50 ms | p99 ms | overhead p50 | overhead p99 | "
            "CPU ms/req | CPU ratio | load 1 min | steal % |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        lat = v.result.get("latency_ms", {})
        out.append(
            f"| {v.extra['variant']} | {v.extra['round']} | {v.scenario.key} | "
            f"{fmt(lat.get('p50'))} | {fmt(lat.get('p99'))} | "
            f"{fmt(overhead(v, baselines, 'p50'))} | {fmt(overhead(v, baselines, 'p99'))} | "
            f"{cpu_per_request(v)} | {fmt(ratio(v))} | {v.load[0]:.2f} | {fmt(v.steal, 0)} |"
        )
    return out


def workers_table(scaling: list[Measured], baselines: dict[str, Measured]) -> list[str]:
    """The (d) sweep per worker count, and the highest rate each held under 10 ms p99 overhead."""
    out = ["", "### Workers: scenario (d) on `coe serve --workers N`, gateway not pinned", "",
           "Per process: CPU seconds of each gateway process over the step (warm-up included), "
           "largest first: with two workers, how evenly they shared the load. Harness CPU: the "
           "fake upstream's and the load generator's CPU time per request, on the same two "
           "cores.", "",
           "| workers | target /s | achieved /s | p50 ms | overhead p99 | not ok | CPU ms/req | "
           "per process, s | harness CPU ms/req | load 1 min | steal % |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    held: dict[int, float] = {}
    kept: dict[int, float] = {}
    for m in scaling:
        lat = m.result.get("latency_ms", {})
        p99 = overhead(m, baselines, "p99")
        workers = m.extra["workers"]
        if sustained(m, baselines):
            kept[workers] = max(kept.get(workers, 0.0), m.rate)
            if p99 is not None and p99 <= 10.0:
                held[workers] = max(held.get(workers, 0.0), m.rate)
        harness = m.extra.get("harness_cpu_s")
        shares = sorted(m.extra.get("process_cpu_s", {}).values(), reverse=True)
        out.append(
            f"| {workers} | {m.rate:.0f} | {m.result['achieved_rate']:.0f} | "
            f"{fmt(lat.get('p50'))} | {fmt(p99)} | {m.result['sent'] - m.result['ok']} | "
            f"{cpu_per_request(m)} | {' / '.join(f'{x:.1f}' for x in shares)} | "
            f"{fmt(harness / m.result['sent'] * 1000 if harness else None)} | "
            f"{m.load[0]:.2f} | {fmt(m.steal, 0)} |"
        )
    out.append("")
    for label, rates in (("with p99 overhead ≤ 10 ms", held),
                         ("sustained (all answered, ≥ 95 % of the rate, p50 overhead ≤ 5 ms)",
                          kept)):
        workers_seen = sorted({m.extra["workers"] for m in scaling})
        text = "; ".join(f"{w} worker(s) {rates[w]:.0f}/s" if w in rates else
                         f"{w} worker(s) none" for w in workers_seen)
        if 1 in rates and len(rates) > 1:
            text += " (" + "; ".join(f"{w} workers {r / rates[1]:.2f}× one"
                                     for w, r in sorted(rates.items()) if w != 1) + ")"
        out.append(f"- Highest rate {label}: {text}.")
    return out


def cpu_per_request(m: Measured) -> str:
    if m.cpu_s is None or not m.result.get("sent"):
        return "—"
    return f"{m.cpu_s / m.result['sent'] * 1000:.2f}"


def row(m: Measured, over: Any, baselines: dict[str, Measured]) -> str:
    lat = m.result.get("latency_ms", {})
    if not lat:
        missing = m.result.get("skipped", "no answers")
        return f"| ({m.scenario.key}) {m.scenario.title} | {missing} |"
    o50 = over(m, baselines, "p50") if over else None
    o99 = over(m, baselines, "p99") if over else None
    return (
        f"| ({m.scenario.key}) {m.scenario.title} | {lat['p50']:.2f} | {lat['p90']:.2f} | "
        f"{lat['p99']:.2f} | {lat['max']:.2f} | {fmt(o50)} | {fmt(o99)} | "
        f"{m.result['achieved_rate']:.0f} | {m.result['sent'] - m.result['ok']} | "
        f"{cpu_per_request(m)} | {m.load[0]:.2f} | {fmt(m.steal, 0)} |"
    )


def split_row(m: Measured, baselines: dict[str, Measured]) -> str:
    parts = []
    for label, part, waits in (("agreed half", "plain_ms", ("a",)),
                               ("escalated half", "split_ms", ("a", "a"))):
        lat = m.result.get(part, {})
        if lat:
            parts.append(
                f"| ↳ {label} | {lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | "
                f"{lat['max']:.2f} | {fmt(overhead(m, baselines, 'p50', part, waits))} | "
                f"{fmt(overhead(m, baselines, 'p99', part, waits))} | | | | |"
            )
    return "\n".join(parts)


def write_results(text: str, path: Path) -> None:
    previous = path.read_text() if path.exists() else "# Benchmark results\n\n" + BEGIN + "\n" + END
    if BEGIN in previous and END in previous:
        head, rest = previous.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        path.write_text(head + text + tail)
    else:
        path.write_text(previous.rstrip() + "\n\n" + text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    parser.add_argument("--warmup", type=int, default=400)
    parser.add_argument("--scenarios", type=lambda s: s.split(","),
                        default=[s.key for s in SCENARIOS],
                        help="comma-separated keys of the scenarios to run (default: all)")
    parser.add_argument("--sweep", type=_rates,
                        default=[100, 150, 200, 250, 300, 400, 500, 700, 1000],
                        help="rates of the (d) sweep on the pinned gateway; '' skips it")
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",") if x],
                        default=[], help="e.g. 1,2: the (d) sweep again on coe serve --workers N, "
                        "the gateway unpinned (see run_workers_sweep)")
    parser.add_argument("--workers-sweep", type=_rates,
                        default=[150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800])
    parser.add_argument("--sweep-seconds", type=float, default=8.0)
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--memory-rate", type=float, default=0.0,
                        help="default: 80 %% of the highest sweep rate under 10 ms p99 overhead")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME='serve_variant arguments'; runs --variant-scenarios again")
    parser.add_argument("--variant-scenarios", type=lambda s: s.split(","), default=["b", "d"])
    parser.add_argument("--variant-rounds", type=int, default=1,
                        help="run the variants this many times, interleaved")
    parser.add_argument("--peer-rate", type=float, default=50.0,
                        help="also run (a), (b), (c) at this rate; 0: skip")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--json", type=Path, default=BENCH / "out" / "results.json")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the memory check (needs --memory-rate); prints its JSON")
    args = parser.parse_args()
    if args.memory_only:
        if not args.memory_rate:
            parser.error("--memory-only needs --memory-rate")
        started = datetime.now(UTC).isoformat(timespec="seconds")
        memory = {"started": started, "command": " ".join(shlex.quote(a) for a in
                                          [Path(PYTHON).name, "-m", "bench.run", *sys.argv[1:]]),
                  "machine": machine(), **run_memory_only(args)}
        archive = archive_path(started, "memory")
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.write_bytes(orjson.dumps(memory, option=orjson.OPT_INDENT_2))
        print(orjson.dumps(memory).decode(), flush=True)
        print(f"wrote {archive} (commit it)", flush=True)
        return
    if args.quick:
        args.duration, args.warmup, args.sweep_seconds = 5.0, 100, 3.0
        args.memory_requests = min(args.memory_requests, 5_000)
    report = run(args)
    archive = archive_path(report["started"], "quick" if args.quick else "")
    report["raw_output"] = str(archive.relative_to(ROOT))
    write_results(render(report), args.out)
    report.pop("_objects")
    data = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    for path in (args.json, archive):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {args.out}, {args.json} and {archive} (commit the last)", flush=True)


def _rates(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def archive_path(started: str, kind: str) -> Path:
    """bench/results/<UTC start, minute>-<host>[-kind].json: the run's raw output, to commit."""
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())
    stamp = started[:16].replace(":", "")
    return ARCHIVE / f"{stamp}-{host or 'host'}{'-' + kind if kind else ''}.json"


if __name__ == "__main__":
    main()
