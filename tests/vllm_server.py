"""A real vLLM OpenAI server (CPU build, SmolLM2-135M-Instruct) for the ``vllm``-marked tests.

- The stack lives in its own virtualenv, ``.venv-vllm`` (``tests/vllm_env.sh``; ``COE_VLLM_VENV``
  names another), so its pins (torch 2.13.0+cpu, transformers 5, its fastapi) stay out of the
  gateway's.
- The model folder is converted once from the GGUF (``tests/vllm_model.py``) and cached under
  ``$COE_TEST_CACHE`` (default ``.pytest_cache/``): ``coe-vllm/smollm2-135m-bf16``;
  ``COE_VLLM_MODEL_DIR`` names a ready folder instead. ``COE_VLLM_ARGS``: more server options.
- ``VLLMServer`` starts ``python -m vllm.entrypoints.openai.api_server`` on a free loopback port in
  its own process group, waits for ``/health`` (``COE_VLLM_STARTUP_S``, default 300 s), and stops
  the whole group: SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``. The server also gets SIGTERM
  when the test process dies without tearing down (``PR_SET_PDEATHSIG``), so none is left behind.
- Without the virtualenv the tests skip, saying why; with ``COE_REQUIRE_VLLM=1`` (``.ci/run``) they
  fail instead, so a CI that could not install the CPU build cannot pass by skipping.
- ``COE_VLLM_URL=http://127.0.0.1:PORT``: use a server already running there (serving the model as
  ``smollm2``) instead of starting one; it is left running.
"""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SERVED_NAME = "smollm2"
STOP_TIMEOUT_S = 20.0
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def venv_dir() -> Path:
    return Path(os.environ.get("COE_VLLM_VENV", REPO / ".venv-vllm"))


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def cache_dir() -> Path:
    return Path(os.environ.get("COE_TEST_CACHE", REPO / ".pytest_cache")) / "coe-vllm"


def missing_reason() -> str | None:
    """Why the vLLM stack cannot run here, or None when it can."""
    if not venv_python().exists():
        return f"no vLLM virtualenv at {venv_dir()} (run tests/vllm_env.sh)"
    return None


def required() -> bool:
    return os.environ.get("COE_REQUIRE_VLLM") == "1"


def ensure_model(timeout_s: float = 900.0) -> tuple[Path, float]:
    """The converted model folder, converting it first when the cache lacks it; and the seconds
    the conversion took (0 when cached)."""
    given = os.environ.get("COE_VLLM_MODEL_DIR")
    if given:
        # A ready HF-format folder (bench/gpu_check.sh on a machine without the converter).
        return Path(given), 0.0
    folder = cache_dir() / "smollm2-135m-bf16"
    if (folder / ".complete").exists():
        return folder, 0.0
    started = time.perf_counter()
    subprocess.run(
        [str(venv_python()), str(REPO / "tests" / "vllm_model.py"), str(folder)],
        check=True,
        timeout=timeout_s,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    return folder, time.perf_counter() - started


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → metric name → the sum of its samples over every label set."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            totals[match[1]] = totals.get(match[1], 0.0) + float(match[3])
    return totals


class VLLMServer:
    """One vLLM server process; ``start`` blocks until it answers ``/health``."""

    def __init__(self, model_dir: Path, log_path: Path, *, threads: str = "0-1") -> None:
        self.model_dir = model_dir
        self.log_path = log_path
        self.port = free_port()
        self.threads = threads
        self.startup_s = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def attach(cls, url: str) -> VLLMServer:
        """A server already running at ``url`` (``COE_VLLM_URL``): used as is, never stopped."""
        server = cls(Path(), Path(os.devnull))
        server.port = int(url.rstrip("/").rsplit(":", 1)[1])
        return server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def command(self) -> list[str]:
        return [
            str(venv_python()), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", SERVED_NAME,
            "--max-model-len", "1024",
            "--enforce-eager",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            # More server options (a GPU machine: --gpu-memory-utilization 0.3 …).
            *shlex.split(os.environ.get("COE_VLLM_ARGS", "")),
        ]  # fmt: skip

    def start(self, timeout_s: float | None = None) -> None:
        limit = timeout_s or float(os.environ.get("COE_VLLM_STARTUP_S", "300"))
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": self.threads,
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        started = time.perf_counter()
        with self.log_path.open("wb") as log:
            # Its own session: stop() signals the API server and the engine process together.
            # And it dies with the test process, however that ends (timeout, SIGKILL, Ctrl-C):
            # a server left behind holds ~4 GB of a shared machine.
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        try:
            self._wait_healthy(started + limit)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - started

    def _wait_healthy(self, deadline: float) -> None:
        assert self._process is not None
        while time.perf_counter() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise RuntimeError(f"vLLM exited with {code} while starting:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"vLLM did not answer /health in time:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            if process is not None:
                process.wait()
            return
        for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # Children left in the group (the engine core) go too.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def metrics(self) -> dict[str, float]:
        response = httpx.get(f"{self.url}/metrics", timeout=10)
        response.raise_for_status()
        return parse_metrics(response.text)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> VLLMServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    # Manual check: convert, start, print the figures, stop.
    model, converted_s = ensure_model()
    with VLLMServer(model, cache_dir() / "vllm-manual.log") as server:
        print(f"converted in {converted_s:.1f} s; ready in {server.startup_s:.1f} s")  # noqa: T201
        print(httpx.get(f"{server.url}/version").text, file=sys.stderr)  # noqa: T201
