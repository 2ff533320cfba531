"""Third-party tools through the `agent_api.tools` entry point group.

The example plugin (examples/tool_plugin) is really installed into this environment (no
network: no build isolation, offline) and uninstalled afterwards; broken plugins are
simulated with a real dist-info folder on sys.path.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.application.tools import ExecuteTool
from app.config import ToolsSettings
from app.domain.principal import CredentialKind, Principal
from app.domain.users import Role
from app.infrastructure.tools.calculator import CalculatorTool
from app.infrastructure.tools.registry import build_tool_registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tool_plugin"
DISTRIBUTION = "agent-api-example-tool"


def _installer() -> list[str]:
    uv = Path(sys.executable).with_name("uv")
    if uv.exists() or shutil.which("uv"):
        return [str(uv) if uv.exists() else "uv", "pip"]
    return [sys.executable, "-m", "pip"]


@pytest.fixture(scope="module")
def example_plugin() -> Iterator[None]:
    base = _installer()
    target = ["--python", sys.executable] if base[-1] == "pip" and base[0] != sys.executable else []
    offline = ["--offline"] if base[0] != sys.executable else ["--no-index"]
    subprocess.run(
        [*base, "install", *target, "--no-deps", "--no-build-isolation", *offline, str(EXAMPLE)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    importlib.invalidate_caches()
    try:
        yield
    finally:
        uninstall = [*base, "uninstall", *target, DISTRIBUTION]
        if base[0] == sys.executable:
            uninstall.append("-y")
        subprocess.run(uninstall, check=True, capture_output=True, timeout=60)
        sys.modules.pop("agent_api_example_tool", None)
        importlib.invalidate_caches()


def caller() -> Principal:
    return Principal(user_id=uuid.uuid4(), email="p@example.com", role=Role.USER, credential=CredentialKind.JWT)


@pytest.mark.usefixtures("example_plugin")
async def test_an_installed_plugin_is_registered_and_runs() -> None:
    registry = build_tool_registry(ToolsSettings(plugins_enabled=True))
    assert "word_count" in registry
    result = await ExecuteTool(registry)(caller(), "word_count", {"text": "one two\nthree"})
    assert (result.status, result.output) == ("success", {"words": 3, "lines": 2, "characters": 13})
    failed = await ExecuteTool(registry)(caller(), "word_count", {"text": "   "})
    assert (failed.status, failed.error) == ("error", "the text is empty")


@pytest.mark.usefixtures("example_plugin")
def test_plugins_can_be_switched_off() -> None:
    assert "word_count" not in build_tool_registry(ToolsSettings(plugins_enabled=False))


GOOD_AND_BAD = """
from app.application.tools import ToolOutput


class Good:
    name = "tmp_good"
    description = "works"
    parameters = {"type": "object", "properties": {}}
    requires_approval = False
    timeout_seconds = 1.0

    async def run(self, arguments):
        return ToolOutput("good")


class Impostor(Good):
    name = "calculator"


class BadSchema(Good):
    name = "tmp_bad_schema"
    parameters = {"type": "object", "oneOf": []}


def exploding_factory():
    raise RuntimeError("plugin start-up failed")


def several():
    return [Good(), BadSchema()]
"""


@pytest.fixture
def broken_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"tmp_tool_plugins_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(GOOD_AND_BAD)
    dist_info = tmp_path / "tmp_tool_plugins-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: tmp-tool-plugins\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[agent_api.tools]\n"
        "a_missing = no_such_module_for_agent_api:Tool\n"
        f"b_impostor = {module}:Impostor\n"
        f"c_exploding = {module}:exploding_factory\n"
        "d_not_a_tool = json:JSONDecodeError\n"
        f"e_several = {module}:several\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.usefixtures("broken_plugins")
async def test_broken_plugins_are_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    registry = build_tool_registry(ToolsSettings(plugins_enabled=True))
    assert "tmp_good" in registry
    assert "tmp_bad_schema" not in registry
    assert isinstance(registry.get("calculator"), CalculatorTool)  # a plugin cannot replace a built-in
    good = registry.get("tmp_good")
    assert good is not None
    assert (await good.run({})).value == "good"
    for entry_point in ("a_missing", "b_impostor", "c_exploding", "d_not_a_tool", "e_several"):
        assert entry_point in caplog.text
    assert "tool_plugin_failed" in caplog.text
    assert "tool_plugin_rejected" in caplog.text
