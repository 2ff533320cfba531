"""Model routing: public model names → upstream targets, from a file or the env shorthand.

``MODELS_CONFIG`` (YAML or JSON) wins; else ``LLM_BASE_URL`` + ``LLM_API_KEY`` + ``LLM_MODELS``
describe one upstream; else the demo provider serves the model ``demo``. See
docs/configuration.md for the file format.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app.application.llm.types import LLMClient, ModelInfo, ModelTarget
from app.infrastructure.llm.demo import DemoLLMClient
from app.infrastructure.llm.openai_client import OpenAICompatibleClient, UpstreamPolicy

DEMO_MODEL = "demo"
DEMO_UPSTREAM = "demo"


class ModelsConfigError(ValueError):
    """The routing configuration is unusable (the service refuses to start)."""


@dataclass
class StaticModelCatalog:
    """The `ModelCatalog` port over a fixed list, plus the upstream clients it owns."""

    entries: list[ModelInfo]
    clients: dict[str, LLMClient] = field(default_factory=dict)

    def models(self) -> list[ModelInfo]:
        return list(self.entries)

    def get(self, model_id: str) -> ModelInfo | None:
        return next((m for m in self.entries if m.id == model_id), None)

    async def aclose(self) -> None:
        for client in self.clients.values():
            if isinstance(client, OpenAICompatibleClient):
                await client.aclose()


class ModelRoutingProbe:
    """Readiness of the LLM side: "ok" for the built-in demo, "unchecked" for remote upstreams.

    Never required: an upstream outage must not take replicas out of rotation (requests
    get 502/504 and the demo keeps working). Pinging a paid upstream on every probe would
    cost money and rate limit.
    """

    name = "llm"
    required = False

    def __init__(self, catalog: StaticModelCatalog) -> None:
        self._catalog = catalog

    async def check(self) -> str:
        remote = any(isinstance(c, OpenAICompatibleClient) for c in self._catalog.clients.values())
        return "unchecked" if remote else "ok"


ClientFactory = Callable[[str, str, str | None, UpstreamPolicy], LLMClient]


def _default_factory(name: str, base_url: str, api_key: str | None, policy: UpstreamPolicy) -> LLMClient:
    return OpenAICompatibleClient(name, base_url, api_key, policy)


def load_models_file(path: str) -> dict[str, Any]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelsConfigError(f"MODELS_CONFIG: cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ModelsConfigError(f"MODELS_CONFIG: {path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelsConfigError(f"MODELS_CONFIG: {path} must hold a mapping with 'upstreams' and 'models'")
    return data


def _policy(base: UpstreamPolicy, overrides: dict[str, Any]) -> UpstreamPolicy:
    known = {f for f in UpstreamPolicy.__dataclass_fields__}
    values = {k: v for k, v in overrides.items() if k in known}
    fields = {f: getattr(base, f) for f in known}
    fields.update(values)
    return UpstreamPolicy(**fields)


def catalog_from_config(  # noqa: PLR0912 - one check per config mistake
    data: dict[str, Any],
    policy: UpstreamPolicy,
    *,
    client_factory: ClientFactory = _default_factory,
    demo: LLMClient | None = None,
    created: int | None = None,
) -> StaticModelCatalog:
    """Builds the catalogue described by a models file (already parsed)."""
    created = created or int(time.time())
    upstreams_raw = data.get("upstreams") or {}
    models_raw = data.get("models") or []
    if not isinstance(upstreams_raw, dict) or not isinstance(models_raw, list) or not models_raw:
        raise ModelsConfigError("MODELS_CONFIG: 'upstreams' must be a mapping and 'models' a non-empty list")
    clients: dict[str, LLMClient] = {}
    for name, spec in upstreams_raw.items():
        if not isinstance(spec, dict):
            raise ModelsConfigError(f"MODELS_CONFIG: upstream '{name}' must be a mapping")
        if spec.get("type") == "demo":
            clients[str(name)] = demo or DemoLLMClient()
            continue
        base_url = spec.get("base_url")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ModelsConfigError(f"MODELS_CONFIG: upstream '{name}' needs an http(s) 'base_url'")
        api_key = spec.get("api_key")
        key_env = spec.get("api_key_env")
        if isinstance(key_env, str):
            api_key = os.environ.get(key_env)
            if not api_key:
                raise ModelsConfigError(
                    f"MODELS_CONFIG: upstream '{name}' reads its key from {key_env}, which is unset"
                )
        clients[str(name)] = client_factory(
            str(name), base_url, str(api_key) if api_key else None, _policy(policy, spec.get("timeouts") or {})
        )
    clients.setdefault(DEMO_UPSTREAM, demo or DemoLLMClient())

    primary: dict[str, ModelTarget] = {}
    specs: list[dict[str, Any]] = []
    for spec in models_raw:
        if not isinstance(spec, dict) or not isinstance(spec.get("id"), str):
            raise ModelsConfigError("MODELS_CONFIG: every model needs an 'id'")
        model_id = spec["id"]
        upstream = str(spec.get("upstream") or "")
        if upstream not in clients:
            raise ModelsConfigError(f"MODELS_CONFIG: model '{model_id}' names an unknown upstream '{upstream}'")
        if model_id in primary:
            raise ModelsConfigError(f"MODELS_CONFIG: model '{model_id}' is listed twice")
        max_tokens = spec.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ModelsConfigError(f"MODELS_CONFIG: model '{model_id}' has an invalid 'max_tokens'")
        primary[model_id] = ModelTarget(
            client=clients[upstream],
            upstream_model=str(spec.get("upstream_model") or model_id),
            upstream_name=upstream,
            max_tokens=max_tokens,
        )
        specs.append(spec)

    entries: list[ModelInfo] = []
    for spec in specs:
        model_id = spec["id"]
        targets = [primary[model_id]]
        for fallback in spec.get("fallbacks") or []:
            if fallback not in primary or fallback == model_id:
                raise ModelsConfigError(f"MODELS_CONFIG: model '{model_id}' falls back to unknown model '{fallback}'")
            targets.append(primary[fallback])
        owned_by = spec.get("owned_by") or (
            "agent-api-demo" if primary[model_id].upstream_name == DEMO_UPSTREAM else primary[model_id].upstream_name
        )
        entries.append(ModelInfo(id=model_id, owned_by=str(owned_by), created=created, targets=tuple(targets)))
    return StaticModelCatalog(entries=entries, clients=clients)


def demo_catalog(demo: LLMClient | None = None, created: int | None = None) -> StaticModelCatalog:
    client = demo or DemoLLMClient()
    target = ModelTarget(client=client, upstream_model=DEMO_MODEL, upstream_name=DEMO_UPSTREAM)
    entry = ModelInfo(id=DEMO_MODEL, owned_by="agent-api-demo", created=created or int(time.time()), targets=(target,))
    return StaticModelCatalog(entries=[entry], clients={DEMO_UPSTREAM: client})


def build_catalog(
    *,
    models_config: str | None,
    base_url: str | None,
    api_key: str | None,
    models: list[str],
    policy: UpstreamPolicy,
    client_factory: ClientFactory = _default_factory,
) -> StaticModelCatalog:
    """The catalogue from settings: the file, else the single-upstream shorthand, else the demo."""
    if models_config:
        return catalog_from_config(load_models_file(models_config), policy, client_factory=client_factory)
    if base_url:
        if not models:
            raise ModelsConfigError("LLM_MODELS must name at least one model when LLM_BASE_URL is set")
        data = {
            "upstreams": {"default": {"base_url": base_url, "api_key": api_key}},
            "models": [{"id": m, "upstream": "default"} for m in models],
        }
        return catalog_from_config(data, policy, client_factory=client_factory)
    return demo_catalog()
