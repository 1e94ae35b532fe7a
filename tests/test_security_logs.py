"""No key and no prompt text in the logs, even at DEBUG, on every path a request can take.

A real ``coe serve --log-level debug`` child serves requests that succeed, escalate past a failing
endpoint, fail at an upstream that echoes the prompt in its error body, stream, carry a wrong key or
a malformed body; then its whole log is searched for the secrets and the prompt.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.tenants import new_key
from tests.conftest import cascade_config
from tests.gateway_process import GatewayProcess
from tests.upstream import UpstreamServer

TENANT_KEY, TENANT_DIGEST = new_key()
WRONG_KEY = "sk-coe-WRONGKEYCANARY0123456789"
UPSTREAM_KEY = "sk-upstream-UPSTREAMCANARY42"
PROMPT = "PROMPTCANARY: my card number is 4111 1111 1111 1111"


@pytest.fixture
def gateway(
    upstreams: dict[str, UpstreamServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GatewayProcess]:
    monkeypatch.setenv("LARGE_KEY", UPSTREAM_KEY)
    config = cascade_config(upstreams, tmp_path / "ledger.db", threshold=1)
    for endpoint in config["endpoints"]:
        if endpoint["name"] == "large":
            endpoint["api_key_env"] = "LARGE_KEY"
    config["tenants"] = [{"name": "acme", "api_key_sha256": [TENANT_DIGEST]}]
    process = GatewayProcess(config, tmp_path, args=("--log-level", "debug"))
    process.start()
    yield process
    process.stop()


def send(gateway: GatewayProcess, key: str = TENANT_KEY, **body: Any) -> httpx.Response:
    payload = {"model": "sentiment", "messages": [{"role": "user", "content": PROMPT}], **body}
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=payload,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_no_key_or_prompt_reaches_the_log_at_debug(
    gateway: GatewayProcess, upstreams: dict[str, UpstreamServer]
) -> None:
    assert send(gateway).status_code == 200
    assert send(gateway, stream=True).status_code == 200
    upstreams["small-a"].answer(None, status=500)
    assert send(gateway).json()["coe"]["tier"] == 1
    # An upstream that quotes the request in its error, as FastAPI-based servers do.
    echo = f'{{"detail": [{{"msg": "bad", "input": "{PROMPT}"}}]}}'.encode()
    upstreams["large"].answer(None, status=422, raw_body=echo)
    refused = send(gateway)
    assert refused.status_code == 502
    assert send(gateway, key=WRONG_KEY).status_code == 401
    malformed = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=f'{{"model": "sentiment", "messages": "{PROMPT}"'.encode(),
        headers={"authorization": f"Bearer {TENANT_KEY}"},
    )
    assert malformed.status_code == 400
    gateway.signal(signal.SIGTERM)
    gateway.wait(30)

    log = gateway.log_path.read_text()
    assert '"level":"debug"' in log  # DEBUG was on
    assert '"level":"error"' not in log
    for secret in (TENANT_KEY, WRONG_KEY, UPSTREAM_KEY, "PROMPTCANARY", "4111"):
        assert secret not in log, secret
    # Upstreams did get the prompt and the key: the log's silence is not for lack of traffic.
    assert upstreams["large"].request_headers[-1]["authorization"] == f"Bearer {UPSTREAM_KEY}"
