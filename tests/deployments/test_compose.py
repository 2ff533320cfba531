"""docker-compose.yml, checked offline: the Compose Specification's JSON schema (vendored in
deployments/schemas), then the rules the schema cannot express (start order, healthchecks, no
inlined secret, every variable documented). Each rule is a function returning problems, shown to
catch a broken file as well as to pass the real one."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest

from tests.deployments.files import (
    COMPOSE_FILE,
    COMPOSE_SCHEMA,
    DEFAULT_DRAIN_SECONDS,
    DEPLOYMENTS,
    DOCKERFILE,
    EXIT_MARGIN_SECONDS,
    LITELLM_CONFIG,
    MAKEFILE,
    ROOT,
    duration_seconds,
    env_example_names,
    load_yaml,
)
from tests.deployments.test_dockerfile import healthcheck_command, parse_dockerfile

Compose = dict[str, Any]

SECRET_NAME = re.compile(r"(PASSWORD|SECRET|PEPPER|TOKEN|_KEY$)")
ONLY_REFERENCES = re.compile(r"^(\$\{[A-Z0-9_]+(:?[-?][^}]*)?\})+$")
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)")
REFERENCE = re.compile(r"\$\{[^}]*\}")
APP_SERVICES = ("api", "migrate")


@pytest.fixture
def compose() -> Compose:
    doc = load_yaml(COMPOSE_FILE)
    assert isinstance(doc, dict)
    return doc


def schema_errors(doc: Compose) -> list[str]:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {name: dict(spec or {}) for name, spec in deps.items()}


def _has_healthcheck(service: dict[str, Any]) -> bool:
    check: dict[str, Any] = service.get("healthcheck") or {}
    return not check.get("disable") and bool(check.get("test"))


def start_order_problems(doc: Compose) -> list[str]:
    """depends_on targets exist, wait for health or completion, and the api waits for the migration."""
    services: dict[str, Any] = doc["services"]
    problems = []
    for name, service in services.items():
        for target, spec in _depends_on(service).items():
            if target not in services:
                problems.append(f"{name} depends on undefined service {target}")
                continue
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy" and not _has_healthcheck(services[target]):
                problems.append(f"{name} waits for {target} to be healthy but {target} has no healthcheck")
            if services[target].get("profiles") and spec.get("required", True):
                problems.append(f"{name} requires {target}, which runs only in profiles {services[target]['profiles']}")
    api_deps = _depends_on(services.get("api", {}))
    expected = {
        "migrate": "service_completed_successfully",
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }
    for target, condition in expected.items():
        if api_deps.get(target, {}).get("condition") != condition:
            problems.append(f"api must depend on {target} with condition {condition}")
    if _depends_on(services.get("migrate", {})).get("postgres", {}).get("condition") != "service_healthy":
        problems.append("migrate must wait for a healthy postgres")
    return problems


def healthcheck_problems(doc: Compose) -> list[str]:
    services: dict[str, Any] = doc["services"]
    problems = [
        f"{name} has no healthcheck" for name in ("postgres", "redis", "api") if not _has_healthcheck(services[name])
    ]
    if services["migrate"].get("restart", "no") != "no":
        problems.append("migrate is one-shot: restart must be 'no'")
    return problems


def secret_problems(doc: Compose) -> list[str]:
    """No secret value written into the file: secret-looking variables only reference `${...}`."""
    problems = []
    for name, service in doc["services"].items():
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, value in environment.items():
            text = "" if value is None else str(value)
            if SECRET_NAME.search(key) and text and not ONLY_REFERENCES.match(text):
                problems.append(f"{name}: {key} has an inlined value")
            # A URL's password must be a reference too (checked with the references blanked out).
            plain = REFERENCE.sub("REF", text)
            if "://" in plain and "@" in plain:
                userinfo = plain.split("://", 1)[1].split("@", 1)[0]
                password = userinfo.partition(":")[2]
                if password.replace("REF", ""):
                    problems.append(f"{name}: {key} has an inlined password")
    return problems


def interpolated_names(doc: Compose) -> set[str]:
    return set(INTERPOLATION.findall(json.dumps(doc)))


def undocumented_variable_problems(doc: Compose, documented: set[str]) -> list[str]:
    """Every `${NAME}` and every app setting the file sets is documented in `.env.example`."""
    names = interpolated_names(doc)
    for service in APP_SERVICES:
        names |= set(doc["services"][service].get("environment", {}))
    return [f"{name} is not in .env.example" for name in sorted(names - documented)]


def stop_budget_problems(doc: Compose, drain_seconds: float) -> list[str]:
    grace = duration_seconds(doc["services"]["api"].get("stop_grace_period", "10s"))
    if grace <= drain_seconds + EXIT_MARGIN_SECONDS:
        return [
            f"api stop_grace_period {grace:g}s must exceed the drain ({drain_seconds:g}s) + {EXIT_MARGIN_SECONDS:g}s"
        ]
    return []


# --- the real file ----------------------------------------------------------------------------


def test_matches_the_compose_specification_schema(compose: Compose) -> None:
    assert schema_errors(compose) == []


def test_start_order(compose: Compose) -> None:
    assert start_order_problems(compose) == []


def test_healthchecks(compose: Compose) -> None:
    assert healthcheck_problems(compose) == []


def test_no_secret_value_is_written_in_the_file(compose: Compose) -> None:
    assert secret_problems(compose) == []


def test_every_variable_is_documented_in_env_example(compose: Compose) -> None:
    assert undocumented_variable_problems(compose, env_example_names()) == []


def test_api_gets_its_drain_time_before_being_killed(compose: Compose) -> None:
    assert stop_budget_problems(compose, DEFAULT_DRAIN_SECONDS) == []


def test_api_and_migrate_run_the_same_image_and_settings(compose: Compose) -> None:
    api, migrate = compose["services"]["api"], compose["services"]["migrate"]
    for key in ("image", "build", "env_file", "environment"):
        assert api[key] == migrate[key], key
    assert api["command"] == ["agent-api", "serve"]
    assert migrate["command"] == ["agent-api", "migrate"]
    assert (COMPOSE_FILE.parent / api["build"]["context"]).resolve() == ROOT
    assert (ROOT / api["build"]["dockerfile"]).resolve() == DOCKERFILE
    # env_file is the repository's .env, the file .env.example documents.
    assert (COMPOSE_FILE.parent / api["env_file"]).resolve() == ROOT / ".env"


def test_api_talks_to_the_compose_services_in_production(compose: Compose) -> None:
    environment = compose["services"]["api"]["environment"]
    assert environment["APP_ENV"] == "production"
    assert environment["HOST"] == "0.0.0.0"  # noqa: S104 - inside a container, by design
    assert environment["DATABASE_AUTO_MIGRATE"] == "false"  # the migrate service does it
    assert "@postgres:5432/" in environment["DATABASE_URL"]
    assert environment["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert environment["REDIS_URL"].startswith("redis://redis:6379/")
    ports = compose["services"]["api"]["ports"]
    assert [p.rsplit(":", 1)[1] for p in ports] == [environment["PORT"]]


def test_api_healthcheck_is_the_image_healthcheck(compose: Compose) -> None:
    image_check = healthcheck_command(parse_dockerfile(DOCKERFILE.read_text())[1])
    test = compose["services"]["api"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[1:3] == image_check[:2]
    port = compose["services"]["api"]["environment"]["PORT"]
    assert f"http://127.0.0.1:{port}/health" in test[3]


def test_data_lives_in_named_volumes(compose: Compose) -> None:
    declared = set(compose["volumes"])
    for name in ("postgres", "redis"):
        volumes = compose["services"][name]["volumes"]
        sources = {v.split(":", 1)[0] for v in volumes}
        assert sources <= declared, name
    assert "postgres-data" in declared
    assert "redis-data" in declared


def test_bind_mounted_files_exist(compose: Compose) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE_FILE.parent / source).is_file(), source


def test_postgres_and_redis_are_not_published(compose: Compose) -> None:
    for name in ("postgres", "redis", "litellm"):
        assert "ports" not in compose["services"][name], name


def test_litellm_profile_and_the_api_pointed_at_it(compose: Compose) -> None:
    litellm = compose["services"]["litellm"]
    assert litellm["profiles"] == ["litellm"]
    assert ":-ghcr.io/berriai/litellm:" in litellm["image"]
    assert _depends_on(compose["services"]["api"])["litellm"] == {"condition": "service_healthy", "required": False}
    # The api's LLM_BASE_URL is interpolated, and `make docker-up LLM=litellm` sets it to the proxy.
    assert compose["services"]["api"]["environment"]["LLM_BASE_URL"] == "${LLM_BASE_URL:-}"
    port = re.search(r"--port=(\d+)", " ".join(litellm["command"]))
    assert port is not None
    makefile = MAKEFILE.read_text()
    assert f"LLM_BASE_URL=http://litellm:{port.group(1)}/v1" in makefile
    assert "COMPOSE_PROFILES=litellm" in makefile
    # The proxy gets named keys only, not the api's whole .env (JWT_SECRET stays with the api).
    assert "env_file" not in litellm


def test_litellm_config_reads_keys_from_the_environment_only() -> None:
    config = load_yaml(LITELLM_CONFIG)
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    assert config["model_list"], "at least one model"
    for model in config["model_list"]:
        assert model["litellm_params"]["api_key"].startswith("os.environ/"), model["model_name"]
    compose_env = load_yaml(COMPOSE_FILE)["services"]["litellm"]["environment"]
    for model in config["model_list"]:
        assert model["litellm_params"]["api_key"].removeprefix("os.environ/") in compose_env


def test_schema_is_the_vendored_copy() -> None:
    # The test must run on machines without the shared folder.
    assert COMPOSE_SCHEMA.is_relative_to(DEPLOYMENTS)
    assert json.loads(COMPOSE_SCHEMA.read_text())["title"] == "Compose Specification"


# --- the checks catch what they are for -------------------------------------------------------


def _broken(compose: Compose, edit: Any) -> Compose:
    doc = copy.deepcopy(compose)
    edit(doc)
    return doc


def test_schema_check_rejects_an_unknown_key_and_a_bad_condition(compose: Compose) -> None:
    def edit(doc: Compose) -> None:
        doc["services"]["api"]["helthcheck"] = {}
        doc["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_done"

    errors = schema_errors(_broken(compose, edit))
    assert any("helthcheck" in e for e in errors)
    assert any("service_done" in e for e in errors)


def test_start_order_check_catches_a_missing_migration_wait(compose: Compose) -> None:
    def edit(doc: Compose) -> None:
        doc["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_started"
        doc["services"]["api"]["depends_on"]["cache"] = {"condition": "service_started"}
        del doc["services"]["redis"]["healthcheck"]

    problems = start_order_problems(_broken(compose, edit))
    assert "api must depend on migrate with condition service_completed_successfully" in problems
    assert "api depends on undefined service cache" in problems
    assert "api waits for redis to be healthy but redis has no healthcheck" in problems


def test_secret_check_catches_inlined_values(compose: Compose) -> None:
    def edit(doc: Compose) -> None:
        doc["services"]["api"]["environment"]["JWT_SECRET"] = "s3cr3t-value-in-the-file"
        doc["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"
        doc["services"]["api"]["environment"]["DATABASE_URL"] = "postgresql+asyncpg://a:hunter2@postgres:5432/a"

    # (api and migrate share one environment mapping, so migrate shows the same problems)
    assert {
        "api: DATABASE_URL has an inlined password",
        "api: JWT_SECRET has an inlined value",
        "postgres: POSTGRES_PASSWORD has an inlined value",
    } <= set(secret_problems(_broken(compose, edit)))


def test_documentation_check_catches_an_unknown_variable(compose: Compose) -> None:
    def edit(doc: Compose) -> None:
        doc["services"]["api"]["environment"]["SOME_NEW_SETTING"] = "${ANOTHER_ONE:-x}"

    assert undocumented_variable_problems(_broken(compose, edit), env_example_names()) == [
        "ANOTHER_ONE is not in .env.example",
        "SOME_NEW_SETTING is not in .env.example",
    ]


def test_stop_budget_check_catches_dockers_default_grace(compose: Compose) -> None:
    doc = _broken(compose, lambda d: d["services"]["api"].pop("stop_grace_period"))
    assert stop_budget_problems(doc, DEFAULT_DRAIN_SECONDS) != []


def test_env_example_documents_what_the_stack_needs() -> None:
    names = env_example_names()
    assert {"POSTGRES_PASSWORD", "JWT_SECRET", "API_KEY_PEPPER", "SHUTDOWN_DRAIN_SECONDS"} <= names
    # The secrets are documented empty: no value is ever committed.
    text = (ROOT / ".env.example").read_text()
    for name in ("POSTGRES_PASSWORD", "JWT_SECRET", "API_KEY_PEPPER", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        assert f"\n{name}=\n" in text, name
