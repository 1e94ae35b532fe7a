"""Abusive clients against one ``coe serve``: does a well-behaved client keep its latency?

Loopback only, bounded in time (about 55 s with the defaults). Every party is its own process, so
no party's own work delays another's pacing:

- the gateway, ``coe serve`` (``tests.gateway_process.GatewayProcess``);
- the well-behaved tenant: ``--rate`` requests a second, open loop, through a baseline phase with no
  attack and then, after a ramp, an attack phase of the same length; each latency is counted from
  the request's *scheduled* start, so a client that falls behind its schedule shows it;
- a slowloris: ``--slowloris`` connections, each sending one header byte a second, reconnecting
  when the gateway closes it (``server.header_timeout_s``);
- an idle flood: ``--idle`` connections that send nothing, reconnecting when closed;
- a noisy tenant sending ``--noisy`` (10) times the well-behaved rate, open loop, on keep-alive
  connections with requests written by hand (httpx would cost the machine more CPU than the
  gateway spends on them; the well-behaved client uses httpx).

The gateway runs with the default ``[server]`` limits unless a flag sets one:
``--tenant-limit`` (``max_concurrent_requests_per_tenant``), ``--tenant-rate``
(``max_requests_per_second_per_tenant``), ``--fair-share-lag-ms`` (``fair_share_loop_lag_ms``;
0: no fair shares). ``--busy N`` adds N processes that spin on the CPU through both phases, as
other work on a shared machine would.

The three attackers run through the ramp and the attack phase. The route's one member is an
in-process classifier that takes 20 ms. The script prints the well-behaved client's latency
percentiles in both phases (the same run), the ratio of its p99s, its slowest answers under
attack, its errors, the noisy tenant's answers, how often the gateway found its loop contended,
how often the attackers were cut off, the gateway's open files and CPU use per phase, and the
load average before and after.

    .venv/bin/python -m bench.abuse                 # default limits: the figures in RELIABILITY.md
    .venv/bin/python -m bench.abuse --fair-share-lag-ms 0  # without fair shares
    .venv/bin/python -m bench.abuse --tenant-limit 4 --tenant-rate 20  # the earlier tuned limits
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from gateway.config import ServerConfig
from gateway.stats import percentile
from gateway.tenants import key_digest
from tests.gateway_process import GatewayProcess

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from multiprocessing.queues import Queue

    # One request; its HTTP status, 0 for a transport error.
    Send = Callable[[], Coroutine[Any, Any, int]]

# The [server] limits a flag may set; unset, the gateway's default.
SERVER_FLAGS: dict[str, tuple[str, type[int] | type[float]]] = {
    "--tenant-limit": ("max_concurrent_requests_per_tenant", int),
    "--tenant-rate": ("max_requests_per_second_per_tenant", float),
    "--fair-share-lag-ms": ("fair_share_loop_lag_ms", float),
}
GOOD_KEY = "sk-coe-bench-good"
NOISY_KEY = "sk-coe-bench-noisy"
BODY = {"model": "slow", "messages": [{"role": "user", "content": "hello"}]}
UPSTREAM_S = 0.02
START_MARGIN_S = 2.0  # for the child processes to be ready before the schedule starts
WARMUP_S = 2.0  # the well-behaved client's first requests open its connections; not counted


def slow_positive(text: str) -> str:
    """The route's member (``kind = "python"``): ``UPSTREAM_S`` of work, then an answer."""
    time.sleep(UPSTREAM_S if text else 0)
    return "positive"


def config(folder: Path, server: dict[str, float]) -> dict[str, Any]:
    return {
        "server": server,  # the limits a flag set; the others at their defaults
        "ledger": {"url": f"sqlite:///{folder / 'ledger.db'}"},
        "endpoints": [{"name": "slow", "kind": "python", "function": "bench.abuse:slow_positive"}],
        "routes": {"slow": {"labels": ["positive", "negative"], "tiers": [["slow"]]}},
        "tenants": [
            {"name": "good", "api_key_sha256": [key_digest(GOOD_KEY)]},
            {"name": "noisy", "api_key_sha256": [key_digest(NOISY_KEY)]},
        ],
    }


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)  # of the 200s
    sent_at: list[float] = field(default_factory=list)  # each 200's scheduled start (monotonic)
    statuses: Counter[int] = field(default_factory=Counter)  # 0: a transport error
    late_ms: float = 0.0  # how far behind its schedule the sender fell, at most
    cut_off: int = 0  # attacker connections the gateway closed
    opened: int = 0
    cpu_s: float = 0.0  # the process's own CPU time

    def finish(self) -> Tally:
        usage = os.times()
        self.cpu_s = usage.user + usage.system
        return self


@dataclass(frozen=True)
class Window:
    """``rate`` requests a second from ``start`` (a ``time.monotonic()``, the same in every
    process) for ``seconds``."""

    start: float
    seconds: float
    rate: float


async def paced(send: Send, window: Window, tally: Tally) -> None:
    """The window's requests, each started on schedule (open loop) and timed from it."""

    async def one(scheduled: float) -> None:
        status = await send()
        tally.statuses[status] += 1
        if status == 200:
            tally.latencies_ms.append((time.monotonic() - scheduled) * 1000)
            tally.sent_at.append(scheduled)

    tasks = []
    for index in range(int(window.rate * window.seconds)):
        scheduled = window.start + index / window.rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tally.late_ms = max(tally.late_ms, -delay * 1000)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)


def _client(url: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    return httpx.AsyncClient(base_url=url, timeout=30, limits=limits)


def httpx_sender(client: httpx.AsyncClient, key: str) -> Send:
    """One request with httpx, as an OpenAI SDK sends it: the well-behaved client."""

    async def send() -> int:
        try:
            response = await client.post(
                "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}
            )
        except httpx.HTTPError:
            return 0
        return response.status_code

    return send


class RawSender:
    """One request written by hand on a keep-alive connection: the flood. httpx spends more CPU
    on a request than the gateway does, and the flood's CPU, which a remote attacker would not
    take from the gateway's machine, should not be what the figures measure."""

    def __init__(self, port: int, key: str) -> None:
        body = json.dumps(BODY).encode()
        self._port = port
        self._request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"authorization: Bearer {key}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode() + body
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def __call__(self) -> int:
        # Newest first; one the gateway closed while idle (keepalive_timeout_s) is dropped.
        while self._idle:
            reader, writer = self._idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                break
            writer.close()
        else:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
            except OSError:
                return 0
        try:
            writer.write(self._request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            fields = dict(
                line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line
            )
            await reader.readexactly(int(fields[b"content-length"]))
        except (OSError, TimeoutError, ValueError, KeyError, asyncio.IncompleteReadError):
            writer.close()
            return 0
        if fields.get(b"connection", b"").strip() == b"close":
            writer.close()
        else:
            self._idle.append((reader, writer))
        return int(head[9:12])


async def _well_behaved(url: str, windows: list[Window]) -> list[Tally]:
    async with _client(url) as client:
        tallies = []
        for window in windows:
            tallies.append(Tally())
            await paced(httpx_sender(client, GOOD_KEY), window, tallies[-1])
    return tallies


async def _noisy(port: int, window: Window) -> Tally:
    tally = Tally()
    await paced(RawSender(port, NOISY_KEY), window, tally)
    return tally


async def _slowloris(port: int, count: int, start: float, until: float) -> Tally:
    trickle = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 10_000

    async def one_byte_a_second(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tally: Tally
    ) -> None:
        for byte in trickle:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(4096), timeout=1.0):
                    await asyncio.wait_for(reader.read(), timeout=1.0)  # 408, close
                tally.cut_off += 1
                return
            except TimeoutError:
                if time.monotonic() >= until:
                    return

    return await _connections(port, count, start, until, one_byte_a_second)


async def _idle(port: int, count: int, start: float, until: float) -> Tally:
    async def silent(
        reader: asyncio.StreamReader, _writer: asyncio.StreamWriter, tally: Tally
    ) -> None:
        while time.monotonic() < until:
            try:
                if not await asyncio.wait_for(reader.read(4096), timeout=1.0):
                    tally.cut_off += 1
                    return
            except TimeoutError:
                continue

    return await _connections(port, count, start, until, silent)


async def _connections(
    port: int,
    count: int,
    start: float,
    until: float,
    use: Callable[[asyncio.StreamReader, asyncio.StreamWriter, Tally], Awaitable[None]],
) -> Tally:
    """``count`` connections from ``start`` to ``until``, each reopened when the gateway closes
    it; ``use`` is what an attacker does on one (it returns once the connection is cut off)."""
    tally = Tally()

    async def one() -> None:
        while time.monotonic() < until:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            tally.opened += 1
            try:
                await use(reader, writer, tally)
            except OSError:
                tally.cut_off += 1
            finally:
                writer.close()

    await asyncio.sleep(max(0.0, start - time.monotonic()))
    await asyncio.gather(*(one() for _ in range(count)))
    return tally


def _child(name: str, results: Queue[tuple[str, Any]], what: str, *args: Any) -> None:
    """A child process's body: run one party, send back its tallies."""
    party: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {
        "good": _well_behaved,
        "noisy": _noisy,
        "slowloris": _slowloris,
        "idle": _idle,
    }
    outcome = asyncio.run(party[what](*args))
    tallies = outcome if isinstance(outcome, list) else [outcome]
    results.put((name, [t.finish() for t in tallies]))


def progress(what: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {what}\n")
    sys.stderr.flush()


def summary(name: str, tally: Tally) -> str:
    lat = sorted(tally.latencies_ms)
    figures = (
        f"p50 {percentile(lat, 50):.1f} ms  p99 {percentile(lat, 99):.1f} ms  max {lat[-1]:.1f} ms"
        if lat
        else "no answers"
    )
    statuses = ", ".join(
        f"{k or 'transport error'}: {v}" for k, v in sorted(tally.statuses.items())
    )
    return (
        f"{name:<22} {len(lat):>5} answered  {figures}  ({statuses}); "
        f"sender at most {tally.late_ms:.0f} ms behind schedule"
    )


def cpu_s(pid: int) -> float:
    """A process's user + system CPU seconds so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spin() -> None:
    while True:
        pass


def run(args: argparse.Namespace, gateway: GatewayProcess, server: dict[str, float]) -> int:
    limits = ServerConfig.model_validate(server)
    context = multiprocessing.get_context("fork")  # nothing runs in the parent yet but the child
    results: Queue[tuple[str, Any]] = context.Queue()
    t0 = time.monotonic() + START_MARGIN_S
    phase, ramp = args.phase_s, args.ramp_s
    attack_from, attack_to = t0 + WARMUP_S + phase, t0 + WARMUP_S + 2 * phase + ramp
    good_windows = [
        Window(t0, WARMUP_S, args.rate),
        Window(t0 + WARMUP_S, phase, args.rate),
        Window(attack_from + ramp, phase, args.rate),
    ]
    noisy_window = Window(attack_from, ramp + phase, args.noisy * args.rate)
    parties: list[tuple[str, str, tuple[Any, ...]]] = [
        ("good", "good", (gateway.url, good_windows)),
        ("noisy", "noisy", (gateway.port, noisy_window)),
        ("slowloris", "slowloris", (gateway.port, args.slowloris, attack_from, attack_to)),
        ("idle", "idle", (gateway.port, args.idle, attack_from, attack_to)),
    ]
    children = [
        context.Process(target=_child, args=(name, results, what, *party_args), daemon=True)
        for name, what, party_args in parties
    ]
    spinners = [context.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    load_before = os.getloadavg()
    for child in [*children, *spinners]:
        child.start()

    def at(moment: float) -> None:
        time.sleep(max(0.0, moment - time.monotonic()))

    at(t0 + WARMUP_S)
    progress("no attack")
    cpu = [cpu_s(gateway.pid)]
    at(attack_from)
    cpu.append(cpu_s(gateway.pid))
    progress(f"attack starts (gateway pid {gateway.pid})")
    at(attack_from + ramp)
    progress("attack measured")
    cpu.append(cpu_s(gateway.pid))
    peak_fds = 0
    while time.monotonic() < attack_to:
        peak_fds = max(peak_fds, gateway.open_fds())
        time.sleep(1.0)
    cpu.append(cpu_s(gateway.pid))
    progress("attack ends")
    collected: dict[str, list[Tally]] = {}
    deadline = time.monotonic() + 60
    while len(collected) < len(children) and time.monotonic() < deadline:
        name, tallies = results.get(timeout=max(0.1, deadline - time.monotonic()))
        collected[name] = tallies
    for spinner in spinners:
        spinner.kill()
    for child in children:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
    load_after = os.getloadavg()

    _, baseline, attacked = collected["good"]
    noisy, loris, idlers = collected["noisy"][0], collected["slowloris"][0], collected["idle"][0]
    ratio = percentile(sorted(attacked.latencies_ms), 99) / percentile(
        sorted(baseline.latencies_ms), 99
    )
    contended = gateway.log_path.read_text(errors="replace").count("event loop")
    lines = [
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; "
        f"{os.cpu_count()} CPUs",
        f"coe serve (own process), [server] defaults"
        f"{''.join(f', but {k} = {v:g}' for k, v in server.items())}: "
        f"max_concurrent_requests_per_tenant = {limits.max_concurrent_requests_per_tenant}, "
        f"max_requests_per_second_per_tenant = {limits.max_requests_per_second_per_tenant:g}, "
        f"fair_share_loop_lag_ms = {limits.fair_share_loop_lag_ms:g}; "
        f"member: in-process classifier, {UPSTREAM_S * 1000:.0f} ms; "
        f"{args.busy} other processes spinning on the CPU",
        f"processes: gateway, well-behaved client, noisy tenant, slowloris, idle flood; "
        f"phases: no attack {phase:g} s, then attack ({ramp:g} s ramp + {phase:g} s measured); "
        f"well-behaved rate {args.rate:g}/s, noisy {args.noisy * args.rate:g}/s",
        summary("well-behaved, alone", baseline),
        summary("well-behaved, attack", attacked),
        f"p99 under attack / p99 alone: {ratio:.2f} (target <= 2)",
        "well-behaved's slowest under attack (ms @ s after the attack started): "
        + ", ".join(
            f"{ms:.0f} @ {at - attack_from:.1f}"
            for ms, at in sorted(zip(attacked.latencies_ms, attacked.sent_at, strict=True))[-5:]
        ),
        summary(f"noisy tenant ({args.noisy:g}x)", noisy),
        f"gateway's event loop found contended (late past fair_share_loop_lag_ms; each counts "
        f"for 1 s): {contended} times",
        f"slowloris: {args.slowloris} connections, {loris.opened} opened, "
        f"{loris.cut_off} closed by the gateway",
        f"idle flood: {args.idle} connections, {idlers.opened} opened, "
        f"{idlers.cut_off} closed by the gateway",
        f"gateway open files during the attack: at most {peak_fds}",
        f"gateway CPU: {(cpu[1] - cpu[0]) / phase * 100:.0f}% of a core with no attack, "
        f"{(cpu[3] - cpu[2]) / phase * 100:.0f}% under attack; "
        f"bench processes' CPU s: good {baseline.cpu_s:.1f}, noisy {noisy.cpu_s:.1f}, "
        f"slowloris {loris.cpu_s:.1f}, idle {idlers.cpu_s:.1f}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    errors = baseline.statuses.total() - baseline.statuses[200]
    errors += attacked.statuses.total() - attacked.statuses[200]
    return 0 if ratio <= 2 and errors == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="well-behaved requests/s")
    parser.add_argument("--phase-s", type=float, default=20.0)
    parser.add_argument("--ramp-s", type=float, default=5.0)
    parser.add_argument(
        "--noisy", type=float, default=10.0, help="the noisy tenant's rate, in well-behaved rates"
    )
    parser.add_argument("--slowloris", type=int, default=300)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on the CPU")
    for flag, (key, kind) in SERVER_FLAGS.items():
        parser.add_argument(
            flag, dest=key, type=kind, help=f"server.{key} (default: the gateway's)"
        )
    args = parser.parse_args()
    server = {key: getattr(args, key) for key, _ in SERVER_FLAGS.values()}
    server = {key: value for key, value in server.items() if value is not None}
    with tempfile.TemporaryDirectory() as folder:
        gateway = GatewayProcess(config(Path(folder), server), Path(folder))
        gateway.start()
        try:
            return run(args, gateway, server)
        finally:
            gateway.stop()


if __name__ == "__main__":
    sys.exit(main())
