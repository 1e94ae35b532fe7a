"""How often tier 0 of a recording agrees, and how often its agreement is right.

    .venv/bin/python -m bench.eval_agreement bench/runs/sst2-dev-zoo.jsonl

Reads a ``coe eval record`` recording (a header line, then one line per example with every
endpoint's call) and prints, as JSON: each endpoint's accuracy and p50 latency
(gateway.stats.percentile), the examples on which every tier-0 endpoint answered the same
label, how many of those unanimous answers are right, and how many of the same examples each
later-tier endpoint gets right. The figures behind bench/EVAL.md's findings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.stats import percentile


def agreement(path: Path) -> dict[str, Any]:
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    examples = [json.loads(line) for line in lines[1:] if line.strip()]
    tiers: dict[str, int] = {e["name"]: e["tier"] for e in header["endpoints"]}
    tier0 = [name for name, tier in tiers.items() if tier == 0]
    later = [name for name, tier in tiers.items() if tier > 0]

    def right(example: dict[str, Any], name: str) -> bool:
        call = example["calls"].get(name, {})
        return bool(call.get("status") == "ok" and call.get("answer") == example["label"])

    unanimous = [
        e for e in examples
        if all(e["calls"].get(n, {}).get("status") == "ok" for n in tier0)
        and len({e["calls"][n].get("answer") for n in tier0}) == 1
    ]
    endpoints = {}
    for name in tiers:
        latencies = [e["calls"][name]["latency_ms"] for e in examples
                     if e["calls"].get(name, {}).get("status") == "ok"]
        endpoints[name] = {
            "tier": tiers[name],
            "ok_calls": len(latencies),
            "accuracy": round(sum(right(e, name) for e in examples) / len(examples), 4),
            "latency_p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        }
    return {
        "recording": str(path),
        "examples": len(examples),
        "endpoints": endpoints,
        "tier0": tier0,
        "tier0_unanimous": len(unanimous),
        "tier0_unanimous_share": round(len(unanimous) / len(examples), 4),
        "tier0_unanimous_right": sum(right(e, tier0[0]) for e in unanimous),
        "tier0_unanimous_accuracy": round(
            sum(right(e, tier0[0]) for e in unanimous) / len(unanimous), 4
        ) if unanimous else None,
        "later_tiers_on_the_unanimous": {
            name: round(sum(right(e, name) for e in unanimous) / len(unanimous), 4)
            for name in later
        } if unanimous else {},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", type=Path, metavar="RUN.jsonl")
    args = parser.parse_args(argv)
    print(json.dumps(agreement(args.recording), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
