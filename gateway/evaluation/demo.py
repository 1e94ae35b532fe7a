"""The pieces of ``coe demo``: its route config, the gateway served in-process, the live pass.

The route lives in ``gateway/demo_data/route.toml.template`` (read it: it says what each member is
and how it is priced); ``demo_settings`` fills in the ports the zoo and the gateway got.
"""

from __future__ import annotations

import math
import string
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

import anyio

from coe_client import CoEClient
from gateway.config import Settings, parse_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.evaluation.datasets import Example

ROUTE = "sentiment"
SMALL, LARGE = "gemma-small", "gemma-large"


def demo_data(name: str) -> str:
    return (resources.files("gateway") / "demo_data" / name).read_text(encoding="utf-8")


def demo_settings(
    *, small_url: str, large_url: str, ledger_url: str, gateway_port: int = 0
) -> tuple[Settings, str]:
    """The demo's config, and its TOML text (written next to the outputs for reference)."""
    text = string.Template(demo_data("route.toml.template")).substitute(
        gateway_port=gateway_port,
        ledger_url=ledger_url,
        gemma_small_url=small_url,
        gemma_large_url=large_url,
    )
    return parse_settings(tomllib.loads(text), source="demo config"), text


@dataclass(slots=True)
class LiveResult:
    correct: int = 0
    answered: int = 0
    exits: dict[int, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0

    @property
    def accuracy(self) -> float:
        total = self.answered + self.failed
        return self.correct / total if total else 0.0

    def latency_percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def run_live(
    base_url: str, examples: list[Example], *, on_done: Callable[[], None] | None = None
) -> tuple[LiveResult, dict[str, object]]:
    """Send each example through the gateway with the project's client (the openai SDK inside),
    one at a time; return the tally and the gateway's own cost report for these requests."""
    result = LiveResult()
    async with CoEClient(base_url=base_url, route=ROUTE) as client:
        for example in examples:
            before = anyio.current_time()
            try:
                answer = await client.classify(str(example.messages[-1]["content"]))
            except Exception:  # the SDK's errors (5xx, timeouts): the demo counts and goes on
                result.failed += 1
                continue
            finally:
                if on_done is not None:
                    on_done()
            result.latencies_ms.append((anyio.current_time() - before) * 1000.0)
            result.answered += 1
            result.correct += answer.label == example.label
            result.exits[answer.tier] = result.exits.get(answer.tier, 0) + 1
            result.cost_usd += answer.cost_usd
        report = await client.costs()
    return result, report
