"""The local model zoo's process handling (with a stand-in server) and its config reading."""

from __future__ import annotations

import socket
import stat
import sys
from pathlib import Path

import httpx
import pytest

from gateway.config import parse_settings
from gateway.evaluation.zoo import LlamaZoo, ServerSpec, ZooError, free_port, specs_for_settings

FAKE = Path(__file__).with_name("fake_llama_server.py")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.anyio
async def test_servers_start_answer_and_stop(tmp_path: Path, fake_python: str) -> None:
    fixed = free_port()
    specs = [ServerSpec("small"), ServerSpec("large", port=fixed)]
    zoo = LlamaZoo(specs, model_path=tmp_path / "m.gguf", log_dir=tmp_path, python=fake_python)
    async with zoo:
        assert zoo.servers["large"].port == fixed
        async with httpx.AsyncClient() as client:
            for alias in ("small", "large"):
                response = await client.get(f"{zoo.base_url(alias)}/models")
                assert response.json() == {"data": [{"id": alias}]}
        ports = [server.port for server in zoo.servers.values()]
    assert not any(listening(port) for port in ports)


@pytest.mark.anyio
async def test_a_server_that_dies_at_start_is_reported_with_its_log(
    tmp_path: Path, fake_python: str
) -> None:
    zoo = LlamaZoo([ServerSpec("small")], model_path=tmp_path / "missing.gguf",
                   log_dir=tmp_path, python=fake_python)
    with pytest.raises(ZooError, match=r"(?s)exited with 3.*no such file"):
        async with zoo:
            pass


def test_specs_come_from_loopback_llamacpp_endpoints() -> None:
    settings = parse_settings({
        "endpoints": [
            {"name": "a", "kind": "llamacpp", "base_url": "http://127.0.0.1:9101/v1",
             "model": "gemma-a"},
            {"name": "b", "kind": "llamacpp", "base_url": "http://127.0.0.1:9101/v1",
             "model": "gemma-b"},
            {"name": "c", "kind": "llamacpp", "base_url": "http://localhost:9102/v1"},
            {"name": "v", "kind": "python", "function": "m:f"},
        ],
    })
    specs = specs_for_settings(settings)
    # Two members on one port share one server (their prompts differ, not their weights).
    assert specs == [ServerSpec("gemma-a", port=9101), ServerSpec("c", port=9102)]
    assert specs_for_settings(settings, {"c"}) == [ServerSpec("c", port=9102)]


def test_a_remote_llamacpp_endpoint_is_not_served_by_the_zoo() -> None:
    settings = parse_settings({
        "endpoints": [{"name": "a", "kind": "llamacpp", "base_url": "http://10.0.0.5:9101/v1"}],
        "server": {"host": "127.0.0.1"},
    })
    with pytest.raises(ZooError, match="only loopback"):
        specs_for_settings(settings)


def test_sigterm_unwinds_like_ctrl_c_while_the_zoo_runs() -> None:
    import os
    import signal

    from gateway.evaluation.zoo import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_local_demo_starts_from_its_bundled_recording(tmp_path: Path) -> None:
    from gateway.evaluation.demo_local import BUNDLED_RUN, ROUTE, bundled_examples, seed_recording
    from providers.recording import read_recording

    bundled = Path(__file__).parents[1] / "gateway" / "demo_data" / BUNDLED_RUN
    if not bundled.exists():
        pytest.skip(f"no {BUNDLED_RUN} bundled")
    examples = bundled_examples(5)
    run = tmp_path / "demo-run.jsonl"
    assert seed_recording(run, examples) == 5
    recording = read_recording(run)
    assert recording.header.route_name == ROUTE
    assert [e.id for e in recording.examples] == [e.id for e in examples]
    # A rerun resumes its own recording rather than starting over.
    assert seed_recording(run, bundled_examples()) == 0
