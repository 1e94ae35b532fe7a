"""``coe serve --workers N``: N worker processes serving one port, under one supervisor.

The supervisor (the ``coe serve`` process) loads the config, binds the listening socket, makes a
fresh folder for prometheus-client's multiprocess files, then forks the workers. Each inherits the
socket and the parsed settings and runs uvicorn on them as ``--workers 1`` does in one process: its
own app, lifespan (HTTP client, ledger connections and writer, metrics), breakers and config
generation. Forking after the bind hands everything over without an import string or a config
read from the environment; the supervisor starts no thread and no event loop before it forks.
POSIX only.

Signals, sent to the supervisor:

- SIGTERM or SIGINT: SIGTERM to every worker; each stops accepting, lets its requests in flight
  finish within ``server.drain_timeout_s`` and flushes its ledger writer. A worker still running
  ``_KILL_MARGIN_S`` after that is killed. The supervisor exits 0.
- SIGHUP: forwarded to every worker; each re-reads the config file into its own generation.
  ``POST /v1/coe/reload`` reaches only the worker that answered it.

A worker that dies (kill -9, a crash) is replaced by one that reads the config file again (kept
if it loads and changes nothing that needs a restart, else the config the supervisor started
with); one whose lifespan fails at start (uvicorn's exit 3: the ledger cannot be opened) stops all
of them, and the supervisor exits 3, as one process would. On Linux workers get SIGTERM if the
supervisor itself dies. The metrics folder is removed when the supervisor exits.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from prometheus_client import values
from prometheus_client.multiprocess import mark_process_dead

from gateway.errors import ConfigError
from gateway.reload import needs_restart, remember_sighup
from gateway.serve import ProcessServer, server_config

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.reload import ConfigSource

log = logging.getLogger("coe.workers")

# prometheus-client reads its multiprocess folder from this variable, in every worker.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# uvicorn's exit status when the lifespan fails at start.
STARTUP_FAILURE = 3
_BACKLOG = 2048
# After the drain timeout, how long a worker may still take to flush its ledger and exit.
_KILL_MARGIN_S = 10.0
# Replacements of dead workers allowed per worker per minute before the supervisor gives up.
_RESTARTS_PER_MINUTE = 5
_WAIT_S = 0.5
_PR_SET_PDEATHSIG = 1
_HANDLED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def worker_count(configured: int) -> int:
    """``server.workers``: 0 means one per core."""
    return configured if configured > 0 else (os.cpu_count() or 1)


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on (IPv4 or IPv6, as ``host`` is)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as exc:
        listener.close()
        raise ConfigError(f"server: cannot listen on {host}:{port}: {exc.strerror}") from exc
    # Listening before the workers start: connections wait in the backlog, none is refused.
    listener.listen(_BACKLOG)
    return listener


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What each worker needs, inherited through fork."""

    settings: Settings
    version: str
    source: ConfigSource
    log_level: str
    listener: socket.socket
    metrics_dir: Path
    supervisor_pid: int


def run_workers(
    settings: Settings, version: str, source: ConfigSource, *, workers: int, log_level: str
) -> int:
    """Serve with ``workers`` processes until SIGTERM or SIGINT; the exit status."""
    listener = bind_listener(settings.server.host, settings.server.port)
    metrics_dir = Path(tempfile.mkdtemp(prefix="coe-metrics-"))
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    spec = WorkerSpec(
        settings, version, source, log_level, listener, metrics_dir, supervisor_pid=os.getpid()
    )
    log.info("starting %d workers", workers, extra={"config_version": version})
    # Signals are taken synchronously (sigtimedwait): no Python handler of the supervisor can run
    # in a freshly forked worker, which clears the mask once it has its own handlers.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
    try:
        return _Supervisor(spec, workers, settings.server.drain_timeout_s).run()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        listener.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous


class _Supervisor:
    def __init__(self, spec: WorkerSpec, workers: int, drain_timeout_s: float) -> None:
        self._spec = spec
        self._workers = workers
        self._drain_timeout_s = drain_timeout_s
        self._pids: set[int] = set()
        self._restarts: collections.deque[float] = collections.deque()
        self._stopping = False
        self._kill_at = 0.0
        self._code = 0

    def run(self) -> int:
        for _ in range(self._workers):
            self._spawn(replacement=False)
        while self._pids:
            received = signal.sigtimedwait(_HANDLED, _WAIT_S)
            if received is not None:
                self._on_signal(received.si_signo)
            self._reap()
            if self._stopping and self._pids and time.monotonic() > self._kill_at:
                log.error("workers %s did not drain in time; killing them", sorted(self._pids))
                self._send(signal.SIGKILL)
                self._kill_at = float("inf")
        return self._code

    def _on_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stop(0)
        elif signum == signal.SIGHUP and not self._stopping:
            self._send(signal.SIGHUP)

    def _stop(self, code: int) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._code = code
        self._kill_at = time.monotonic() + self._drain_timeout_s + _KILL_MARGIN_S
        self._send(signal.SIGTERM)

    def _send(self, signum: int) -> None:
        for pid in self._pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass  # exited; reaped next

    def _reap(self) -> None:
        while self._pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._pids.clear()
                return
            if pid == 0:
                return
            self._pids.discard(pid)
            # Its live gauges (breaker states, spool) no longer count; its counters still do.
            mark_process_dead(pid, str(self._spec.metrics_dir))  # type: ignore[no-untyped-call]
            code = os.waitstatus_to_exitcode(status)
            if self._stopping:
                continue
            if code == STARTUP_FAILURE:
                log.error("a worker failed to start (see above); stopping the others")
                self._stop(STARTUP_FAILURE)
            elif self._may_restart():
                log.warning("worker %d exited with %d; starting another", pid, code)
                self._spawn(replacement=True)
            else:
                log.error("workers keep exiting (the last with %d); stopping", code)
                self._stop(1)

    def _may_restart(self) -> bool:
        now = time.monotonic()
        while self._restarts and self._restarts[0] < now - 60:
            self._restarts.popleft()
        self._restarts.append(now)
        return len(self._restarts) <= _RESTARTS_PER_MINUTE * self._workers

    def _spawn(self, *, replacement: bool) -> None:
        pid = os.fork()
        if pid == 0:
            _worker(self._spec, replacement=replacement)
        self._pids.add(pid)


def _worker(spec: WorkerSpec, *, replacement: bool) -> NoReturn:
    """A forked worker: uvicorn on the inherited socket, then ``os._exit`` (the supervisor's
    cleanup is its own)."""
    code = 1
    try:
        # SIGHUP is remembered until the lifespan handles it (then it reloads at once); the
        # others are uvicorn's.
        signal.signal(signal.SIGHUP, remember_sighup)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        _die_with_supervisor(spec.supervisor_pid)
        # prometheus-client chose its value class at import, in the supervisor, before the
        # folder existed: this process's metrics go to the folder's files.
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        settings, version = (
            _reread(spec) if replacement else (spec.settings, spec.version)
        )
        config = server_config(
            settings,
            log_level=spec.log_level,
            log_config=None,
            source=spec.source,
            version=version,
            reload_on_sighup=True,
            metrics_dir=spec.metrics_dir,
        )
        server = ProcessServer(config)
        server.run(sockets=[spec.listener])
        code = 0 if server.started else STARTUP_FAILURE
    except SystemExit as exc:  # uvicorn exits STARTUP_FAILURE when the lifespan fails
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("worker %d failed", os.getpid())
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reread(spec: WorkerSpec) -> tuple[Settings, str]:
    """A replacement worker serves the file as it is now (as a reload would), if it can."""
    try:
        settings, version = spec.source.load()
    except ConfigError as exc:
        log.warning("a replacement worker keeps the config it started with: %s", exc.message)
        return spec.settings, spec.version
    if needs_restart(spec.settings, settings):
        return spec.settings, spec.version
    return settings, version


def _die_with_supervisor(supervisor_pid: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
