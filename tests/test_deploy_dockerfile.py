"""The Dockerfile, read as Docker reads it, and its build stage run for real in a temp dir.

Docker cannot run here, so the builder stage's steps (COPY and RUN, with ENV and WORKDIR) are
replayed in a fresh virtualenv with the image's absolute paths moved under a temp directory; the
runtime stage's settings are checked, and its HEALTHCHECK command is run against a live gateway.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.config import Settings
from tests.gateway_server import GatewayServer

ROOT = Path(__file__).resolve().parent.parent
# The absolute paths the builder stage may use; the replay moves them under a temp directory.
BUILDER_ROOTS = ("/opt/venv", "/wheels", "/src")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def logical_lines(text: str) -> list[str]:
    """Docker's reading: comment lines dropped, backslash continuations joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continuation"
    return lines


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            base = words[0]
            for name, value in global_args.items():
                base = base.replace("${" + name + "}", value).replace("$" + name, value)
            named = len(words) == 3 and words[1].upper() == "AS"
            stages.append(Stage(base=base, name=words[2] if named else None))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM, not {keyword}"
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for pair in shlex.split(args):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(ROOT / "Dockerfile")[1]


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def builder(stages: list[Stage]) -> Stage:
    [stage] = [s for s in stages if s.name == "builder"]
    return stage


def test_it_is_multi_stage_on_python_3_11_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert {stage.base for stage in stages} == {"python:3.11-slim"}


def test_the_runtime_stage_takes_only_the_venv_from_the_builder(runtime: Stage) -> None:
    assert runtime.all("COPY") == ["--from=builder /opt/venv /opt/venv"]
    assert env_of(runtime)["PATH"].startswith("/opt/venv/bin:")


def test_the_runtime_runs_as_the_unprivileged_user_it_creates(runtime: Stage) -> None:
    user = runtime.last("USER")
    uid = user.split(":")[0]
    assert uid not in ("root", "0")
    assert any(f"--uid {uid}" in run and "useradd" in run for run in runtime.all("RUN"))


def test_the_runtime_serves_the_mounted_config_on_every_interface(runtime: Stage) -> None:
    command = exec_form(runtime.last("ENTRYPOINT")) + exec_form(runtime.last("CMD"))

    assert command[:2] == ["coe", "serve"]
    assert command[command.index("--config") + 1] == "/etc/coe/config.toml"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert runtime.last("EXPOSE") == command[command.index("--port") + 1]


def test_the_healthcheck_asks_healthz_on_the_served_port(runtime: Stage) -> None:
    options, _, check = runtime.last("HEALTHCHECK").partition("CMD")
    url = env_of(runtime)["COE_HEALTHCHECK_URL"]
    port = exec_form(runtime.last("CMD"))[-1]

    assert {o.split("=")[0] for o in options.split()} <= {
        "--interval", "--timeout", "--start-period", "--start-interval", "--retries"
    }
    assert exec_form(check.strip())[0] == "python"
    assert url == f"http://127.0.0.1:{port}/healthz"


def healthcheck_status(runtime: Stage, url: str) -> int:
    _, _, check = runtime.last("HEALTHCHECK").partition("CMD")
    command = exec_form(check.strip())
    env = {**os.environ, "COE_HEALTHCHECK_URL": url}
    return subprocess.run([sys.executable, *command[1:]], env=env, timeout=30).returncode


def test_the_healthcheck_command_passes_on_a_live_gateway(
    runtime: Stage, make_settings: Callable[..., Settings]
) -> None:
    with GatewayServer(make_settings()) as gateway:
        assert healthcheck_status(runtime, f"{gateway.url}/healthz") == 0


def test_the_healthcheck_command_fails_when_nothing_answers(runtime: Stage) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    assert healthcheck_status(runtime, f"http://127.0.0.1:{closed_port}/healthz") != 0


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/"))
        or path.startswith(p.rstrip("/") + "/")
        for p in patterns
    )


def copy_sources(stage: Stage) -> list[tuple[list[str], str]]:
    copies = []
    for args in stage.all("COPY"):
        words = args.split()
        assert not any(w.startswith("--") for w in words), "the builder copies from the context"
        copies.append((words[:-1], words[-1]))
    return copies


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest(builder: Stage) -> None:
    patterns = dockerignore_patterns()

    for sources, _ in copy_sources(builder):
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for private in (".git", ".venv", ".env", "coe.db", "gateway/__pycache__"):
        assert ignored(private, patterns), f"{private} would be sent to the Docker daemon"


def on_host(text: str, root: Path) -> str:
    for path in BUILDER_ROOTS:
        text = text.replace(path, f"{root}{path}")
    return text


def test_the_builder_stage_builds_and_installs_the_project_in_a_fresh_venv(
    builder: Stage, tmp_path: Path
) -> None:
    # The image's `python`: this interpreter's base install, not the test virtualenv.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(env_of(builder))
    workdir = tmp_path
    for keyword, args in builder.instructions:
        if keyword == "WORKDIR":
            workdir = Path(on_host(args, tmp_path))
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            [(sources, dest)] = copy_sources(Stage("", None, [("COPY", args)]))
            target = workdir / dest
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        elif keyword == "RUN":
            absolute = {w for w in args.split() if w.startswith("/") and w != "/dev/null"}
            assert all(w.startswith(BUILDER_ROOTS) for w in absolute), absolute
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", on_host(args, tmp_path)],
                cwd=workdir, env=env, capture_output=True, text=True, timeout=240,
            )
            assert done.returncode == 0, f"RUN {args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        else:
            assert keyword in ("ENV", "ARG", "LABEL"), f"the replay does not know {keyword}"

    venv = Path(on_host("/opt/venv", tmp_path))
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import gateway, importlib.resources as r, coe_client, gateway.metrics;"
         "print(r.files('gateway').joinpath('py.typed').is_file())"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert probe.stdout.strip() == "True", probe.stderr
    help_text = subprocess.run(
        [str(venv / "bin" / "coe"), "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert help_text.returncode == 0 and "usage: coe" in help_text.stdout
