"""The image, checked without a Docker engine: hadolint, the structure the issue asks for, the
build context (.dockerignore), and the HEALTHCHECK command run for real against a loopback server."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.deployments.files import DOCKERFILE, DOCKERIGNORE, ROOT


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.args_of("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                values[key] = value
        return values


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments dropped, global ARGs applied to FROM."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            words = args.split()
            base = words[0]
            for name, value in global_args.items():
                base = base.replace("${" + name + "}", value).replace("$" + name, value)
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=alias))
        else:
            stages[-1].instructions.append((keyword, args))
    return stages


def copy_sources(args: str) -> tuple[list[str], str, str | None]:
    """(sources, destination, --from stage) of a COPY instruction."""
    words = shlex.split(args)
    source_stage = None
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if flag.startswith("--from="):
            source_stage = flag.removeprefix("--from=")
    return words[:-1], words[-1], source_stage


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list)
    return [str(item) for item in value]


def healthcheck_command(stage: Stage) -> list[str]:
    (args,) = stage.args_of("HEALTHCHECK")
    _, _, command = args.partition("CMD ")
    return exec_form(command.strip())


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_hadolint_finds_nothing_to_warn_about() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_stages_on_the_same_slim_python_and_the_final_one_is_not_the_builder(stages: list[Stage]) -> None:
    assert len(stages) == 2
    builder, final = stages
    assert builder.base == final.base == "python:3.11-slim"  # the venv's interpreter links stay valid
    assert builder.name == "builder"
    assert final.name != "builder"


def test_dependencies_come_from_the_lock_as_wheels_into_a_venv(stages: list[Stage]) -> None:
    builder = stages[0]
    runs = " ".join(builder.args_of("RUN"))
    assert "python -m venv /opt/venv" in runs
    assert "--only-binary=:all: --requirement requirements.lock" in runs
    copied = [source for args in builder.args_of("COPY") for source in copy_sources(args)[0]]
    assert "requirements.lock" in copied
    assert "/opt/venv/bin" in builder.env()["PATH"]


def test_final_stage_holds_only_the_venv_the_code_and_the_migrations(stages: list[Stage]) -> None:
    builder, final = stages
    from_builder: list[str] = []
    from_context: list[str] = []
    for args in final.args_of("COPY"):
        sources, _, source_stage = copy_sources(args)
        (from_builder if source_stage == builder.name else from_context).extend(sources)
    assert from_builder == ["/opt/venv"]
    assert sorted(from_context) == ["alembic.ini", "app", "migrations"]
    # The code sits where the builder installed it editable (the venv's finder points there).
    assert final.args_of("WORKDIR") == builder.args_of("WORKDIR") == ["/srv/agent-api"]


def test_final_stage_installs_no_compiler_or_package(stages: list[Stage]) -> None:
    final_runs = " ".join(stages[1].args_of("RUN"))
    for forbidden in ("apt-get", "apk ", "gcc", "build-essential", "pip install", "curl", "wget"):
        assert forbidden not in final_runs


def test_runs_as_a_fixed_non_root_user(stages: list[Stage]) -> None:
    final = stages[1]
    (user,) = final.args_of("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()  # numeric: Kubernetes' runAsNonRoot can check it
    assert int(uid) > 0
    assert gid.isdigit()
    assert int(gid) > 0
    # USER comes after every RUN (nothing later runs as root).
    keywords = [keyword for keyword, _ in final.instructions]
    assert keywords.index("USER") > max(i for i, keyword in enumerate(keywords) if keyword == "RUN")


def test_serves_in_production_on_all_interfaces(stages: list[Stage]) -> None:
    final = stages[1]
    env = final.env()
    assert env["APP_ENV"] == "production"
    assert env["HOST"] == "0.0.0.0"  # noqa: S104 - inside a container, by design
    assert final.args_of("EXPOSE") == [env["PORT"]]
    (cmd,) = final.args_of("CMD")
    assert exec_form(cmd) == ["agent-api", "serve"]


def test_healthcheck_uses_python_not_curl_or_wget(stages: list[Stage]) -> None:
    command = healthcheck_command(stages[1])
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    assert "/health" in command[2]


class _HealthHandler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/health" else 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HealthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _run_healthcheck(command: list[str], port: int) -> int:
    env = {**os.environ, "PORT": str(port)}
    return subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=20, check=False
    ).returncode


def test_healthcheck_passes_on_200_and_fails_on_503_or_no_server(
    stages: list[Stage], health_server: ThreadingHTTPServer
) -> None:
    command = healthcheck_command(stages[1])
    port = health_server.server_address[1]
    _HealthHandler.status = 200
    assert _run_healthcheck(command, port) == 0
    _HealthHandler.status = 503
    try:
        assert _run_healthcheck(command, port) != 0
    finally:
        _HealthHandler.status = 200
    health_server.shutdown()
    health_server.server_close()
    assert _run_healthcheck(command, port) != 0


# --- the build context ---------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((negated, line.removeprefix("!").strip("/")))
    return patterns


def _matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent folders; `**` spans folders."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    if pattern.startswith("**/"):
        tail = pattern.removeprefix("**/")
        return any(fnmatch.fnmatchcase(part, tail) for part in parts) or any(
            fnmatch.fnmatchcase(c, tail) for c in candidates
        )
    return any(fnmatch.fnmatchcase(c, pattern) and c.count("/") == pattern.count("/") for c in candidates)


def sent_to_builder(path: str) -> bool:
    """Whether `path` (relative to the repository) is part of the build context."""
    included = True
    for negated, pattern in dockerignore_patterns():
        if _matches(pattern, path):
            included = negated
    return included


def test_everything_the_dockerfile_copies_is_in_the_build_context(stages: list[Stage]) -> None:
    for stage in stages:
        for args in stage.args_of("COPY"):
            sources, _, source_stage = copy_sources(args)
            if source_stage is not None:
                continue
            for source in sources:
                assert (ROOT / source).exists(), source
                assert sent_to_builder(source), f"{source} is excluded by .dockerignore"
                if (ROOT / source).is_dir():
                    some_file = next(p for p in (ROOT / source).rglob("*.py") if "__pycache__" not in p.parts)
                    assert sent_to_builder(some_file.relative_to(ROOT).as_posix())


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".git/config",
        ".venv/bin/python",
        ".local/postgres/PG_VERSION",
        "tests/conftest.py",
        "app/__pycache__/config.cpython-311.pyc",
        "app/.env",
        "docs/architecture.md",
    ],
)
def test_secrets_and_local_state_never_reach_the_builder(path: str) -> None:
    assert not sent_to_builder(path)
