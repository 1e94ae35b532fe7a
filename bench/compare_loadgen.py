"""Which load generator disturbs the machine less: bench/loadgen.py or wrk with a pacing Lua script.

    python -m bench.compare_loadgen [--rate 1000] [--seconds 10]

Both send the same request to the same fake upstream (0 ms) at the same rate; for each, the CPU
time the generator process used (user + system, from wait4) per 1,000 requests, the rate it held
and the latency it saw. wrk (Debian's ``wrk`` package) is closed loop: its Lua ``delay()`` paces
each of its connections, so it holds the rate only while answers come back faster than the pace.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
PORT = 9190
BODY = orjson.dumps(
    {"model": "fake", "messages": [{"role": "user", "content": "Great film!"}], "max_tokens": 4}
).decode()
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
local pace_ms = tonumber(os.getenv("WRK_PACE_MS"))
function delay()
  return pace_ms
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def run_measured(command: list[str], env: dict[str, str] | None = None) -> tuple[bytes, float]:
    """The command's output and the CPU seconds it used."""
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise RuntimeError(f"{command[0]} exited with {process.returncode}")
        out.seek(0)
        return out.read(), usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=10, help="wrk's connections")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    upstream = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-m", "bench.fake_upstream",
         "--endpoint", f"port={PORT},answer=positive"],
        cwd=ROOT, stdout=subprocess.PIPE,
    )
    rows: list[dict[str, Any]] = []
    try:
        assert upstream.stdout is not None
        upstream.stdout.readline()
        url = f"http://127.0.0.1:{PORT}/v1/chat/completions"
        requests = args.rate * args.seconds
        out, cpu = run_measured(
            ["taskset", "-c", "0", sys.executable, "-m", "bench.loadgen", "--url", url,
             "--rate", str(args.rate), "--requests", str(requests), "--body", BODY]
        )
        mine = orjson.loads(out)
        rows.append({"name": "bench/loadgen.py (asyncio, uvloop, open loop)", "cpu": cpu,
                     "requests": requests, "rate": mine["achieved_rate"],
                     **{k: mine["latency_ms"][k] for k in ("p50", "p90", "p99", "max")}})
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(WRK_SCRIPT)
        pace = args.connections * 1000 // args.rate
        out, cpu = run_measured(
            ["taskset", "-c", "0", "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s",
             "-s", script.name, url],
            env={"WRK_BODY": BODY, "WRK_PACE_MS": str(pace)},
        )
        os.unlink(script.name)
        line = next(x for x in out.decode().splitlines() if x.startswith("{"))
        wrk = orjson.loads(line)
        rows.append({"name": f"wrk 4.1 + Lua delay() ({args.connections} connections, {pace} ms "
                             "pace, closed loop)", "cpu": cpu, "requests": wrk["requests"],
                     "rate": wrk["requests"] / (wrk["duration_us"] / 1e6),
                     **{k: wrk[f"{k}_us"] / 1000 for k in ("p50", "p90", "p99", "max")}})
    finally:
        upstream.terminate()
        upstream.wait()
    print(f"target {args.rate} requests/s for {args.seconds} s; load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| generator | CPU ms per 1,000 requests | achieved /s | p50 ms | p90 ms | p99 ms | "
          "max ms |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['cpu'] / r['requests'] * 1e6:.0f} | {r['rate']:.0f} | "
              f"{r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['max']:.2f} |")


if __name__ == "__main__":
    main()
