"""Where the deployment files are, and small readers shared by the deployment tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from app.config import BootstrapSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"
DOCKERFILE = DEPLOYMENTS / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = DEPLOYMENTS / "docker-compose.yml"
COMPOSE_SCHEMA = DEPLOYMENTS / "schemas" / "compose-spec.json"
LITELLM_CONFIG = DEPLOYMENTS / "litellm.yaml"
K8S = DEPLOYMENTS / "k8s"
SECRET_TEMPLATE = K8S / "secret.example.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
MAKEFILE = ROOT / "Makefile"

# The drain deadline every stop budget is measured against: the app's own default.
DEFAULT_DRAIN_SECONDS = float(BootstrapSettings.model_fields["shutdown_drain_seconds"].default)
# The promise: the process exits before the drain deadline plus this.
EXIT_MARGIN_SECONDS = 2.0

_ENV_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=")


def env_example_names() -> set[str]:
    """Variable names documented in `.env.example` (one `NAME=value` line each)."""
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _ENV_LINE.match(line)
        if match:
            names.add(match.group(1))
    return names


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def duration_seconds(value: str | int | float) -> float:
    """A compose duration (`30s`, `1m30s`, `500ms`) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a compose duration: {value!r}")
    return sum(float(number) * units[unit] for number, unit in parts)
