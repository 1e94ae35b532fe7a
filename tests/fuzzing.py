"""schemathesis over the gateway's own OpenAPI document, counting what it sent and what came back.

Every operation is fuzzed in both of schemathesis's modes: positive (inputs the document allows)
and negative (inputs it forbids). Nothing is asserted here: the caller checks that no answer was a
5xx. Generation is derandomised, so a run is repeatable.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation import GenerationMode


@dataclass
class FuzzReport:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    # Inputs the HTTP client itself would not send (a header it cannot encode, …).
    unsendable: int = 0
    # 502s because every top-tier answer fell outside the request's own answer set: the test
    # upstreams answer "positive" whatever labels or task a generated request asks for.
    unanswerable: int = 0
    server_errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.cases.values())


def gateway_schema(base_url: str, routes: list[str]) -> Any:
    """The served document, with ``model`` narrowed to the routes so positive cases reach them."""
    document = httpx.get(f"{base_url}/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/responses"):
        operation = document["paths"][path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        body["properties"]["model"] = {"type": "string", "enum": routes}
    return schemathesis.openapi.from_dict(document)


def fuzz(
    base_url: str, schema: Any, examples: int, headers: dict[str, str] | None = None
) -> FuzzReport:
    """Up to ``examples`` cases per operation and mode, sent to ``base_url``."""
    report = FuzzReport()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            modes = [GenerationMode.POSITIVE]
            if operation.body or list(operation.iter_parameters()):
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:
                _run(operation, mode, examples, base_url, session, headers or {}, report)
    return report


def _run(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
    report: FuzzReport,
) -> None:
    label = f"{operation.label} [{mode.value}]"

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def one(case: Any) -> None:
        report.cases[label] += 1
        try:
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, ValueError):
            report.unsendable += 1
            return
        report.statuses[response.status_code] += 1
        if _unanswerable(response):
            report.unanswerable += 1
        elif response.status_code >= 500:
            report.server_errors.append(
                f"{case.as_curl_command()} -> {response.status_code} {response.text[:300]}"
            )

    one()


def _unanswerable(response: requests.Response) -> bool:
    if response.status_code != 502:
        return False
    message = str(response.json()["error"]["message"])
    failures = message.partition("failed: ")[2].split("; ")
    return all(failure.endswith(": unparsable") for failure in failures)
