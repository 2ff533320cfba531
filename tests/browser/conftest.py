"""One real server for the console's browser tests: the real app on 127.0.0.1 (uvicorn in a
thread), the demo model plus a model on a fake upstream (for approvals), a bootstrap admin,
and a login throttle low enough to show the rate-limit message in a few attempts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.config import AuthSettings, LLMSettings
from tests.conftest import make_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.identity import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, new_email, with_admin
from tests.support.threaded_server import ThreadedServer

BROWSER_DIR = Path(__file__).resolve().parent
ROOT = BROWSER_DIR.parents[1]
OUTPUT_DIR = ROOT / "test-output" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
APPROVAL_MODEL = "approval-model"


@dataclass
class ConsoleServer:
    base_url: str
    upstream: FakeUpstream
    user_email: str

    def admin_headers(self) -> dict[str, str]:
        with httpx.Client(base_url=self.base_url, timeout=10) as http:
            login = http.post("/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            assert login.status_code == 200, login.text
            return {"Authorization": f"Bearer {login.json()['access_token']}"}

    def drive(self, scenario: str, output: Path, **env: str) -> dict[str, Any]:
        """Run one scenario of console.mjs in headless Chromium; what it saw, as a dict."""
        assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium)"
        assert (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), "run `make test` (npm ci in tests/browser)"
        node = shutil.which("node")
        assert node, "node is required for the browser tests"
        completed = subprocess.run(
            [node, "console.mjs", scenario],
            cwd=BROWSER_DIR,
            env={
                **os.environ,
                "CHROMIUM": CHROMIUM,
                "CONSOLE_BASE_URL": self.base_url,
                "CONSOLE_OUT": str(output),
                "CONSOLE_ADMIN_EMAIL": ADMIN_EMAIL,
                "CONSOLE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "CONSOLE_USER_EMAIL": self.user_email,
                "CONSOLE_APPROVAL_MODEL": APPROVAL_MODEL,
                **env,
            },
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        lines = completed.stdout.strip().splitlines()
        assert lines, f"no output from the browser driver: {completed.stderr[-3000:]}"
        result: dict[str, Any] = json.loads(lines[-1])
        assert result["ok"], result.get("error", "") + completed.stderr[-2000:]
        assert result["pageErrors"] == [], result["pageErrors"]
        return result


def _models_file(path: Path, upstream: FakeUpstream) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "upstreams": {"demo": {"type": "demo"}, "fake": {"base_url": upstream.base_url, "api_key": "sk-up"}},
                "models": [
                    {"id": "demo", "upstream": "demo"},
                    {"id": APPROVAL_MODEL, "upstream": "fake"},
                ],
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def console_server(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleServer]:
    from app.bootstrap import build_container
    from app.infrastructure.http.app import build_http_app

    upstream = FakeUpstream()
    config = _models_file(tmp_path_factory.mktemp("console") / "models.yaml", upstream)
    settings = make_settings(
        database_url,
        redis_url,
        llm=LLMSettings(models_config=str(config), usage_flush_interval_ms=20),
        auth=AuthSettings(argon2_memory_kib=64, argon2_time_cost=1, login_max_failures_per_account=3),
    )
    server = ThreadedServer(build_http_app(build_container(with_admin(settings))))
    server.start()
    try:
        email = new_email()
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            registered = http.post("/v1/auth/register", json={"email": email, "password": PASSWORD, "name": "Ada"})
            assert registered.status_code == 201, registered.text
        yield ConsoleServer(server.base_url, upstream, email)
    finally:
        server.stop()
        upstream.close()


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """test-output/browser/<test name>/ (git-ignored): the screenshots of each step."""
    name: str = request.node.name
    folder = OUTPUT_DIR / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder
