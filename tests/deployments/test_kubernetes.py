"""deployments/k8s, checked offline: rendered as kustomize would, every object validated (strict,
unknown fields rejected) against the Kubernetes JSON schemas shipped by `kubernetes-validate`,
then the consistency rules between objects (stop budget, probes, labels and selectors, HPA and
PDB targets, config keys). Each rule returns problems and is shown to catch a broken manifest."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.config import secret_problem
from tests.deployments.files import (
    DEFAULT_DRAIN_SECONDS,
    DOCKERFILE,
    EXIT_MARGIN_SECONDS,
    K8S,
    SECRET_TEMPLATE,
    env_example_names,
    load_yaml,
    load_yaml_documents,
)
from tests.deployments.test_dockerfile import parse_dockerfile

Manifest = dict[str, Any]
Objects = dict[tuple[str, str], Manifest]

# The oldest Kubernetes release the manifests promise to work on, and the newest schemas shipped.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
# What the small renderer below understands; anything else must be taught to it first.
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "images"}


def render_kustomization() -> Objects:
    """The objects `kustomize build deployments/k8s` produces (resources + image overrides)."""
    kustomization = load_yaml(K8S / "kustomization.yaml")
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"teach render_kustomization about {unknown}"
    images = {image["name"]: image for image in kustomization.get("images", [])}
    objects: Objects = {}
    for resource in kustomization["resources"]:
        for doc in load_yaml_documents(K8S / resource):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"duplicate {key}"
            for container in _containers(doc):
                name, _, tag = container["image"].partition(":")
                if name in images:
                    override = images[name]
                    container["image"] = f"{override.get('newName', name)}:{override.get('newTag', tag or 'latest')}"
            objects[key] = doc
    return objects


def _pod_spec(doc: Manifest) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "Job"):
        spec: dict[str, Any] = doc["spec"]["template"]["spec"]
        return spec
    return None


def _containers(doc: Manifest) -> list[dict[str, Any]]:
    spec = _pod_spec(doc)
    return [] if spec is None else list(spec.get("containers", []))


@pytest.fixture
def objects() -> Objects:
    return render_kustomization()


def _one(objects: Objects, kind: str) -> Manifest:
    (found,) = [doc for (k, _), doc in objects.items() if k == kind]
    return found


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- consistency rules -------------------------------------------------------------------------


def stop_budget_problems(objects: Objects) -> list[str]:
    """terminationGracePeriodSeconds > preStop sleep + SHUTDOWN_DRAIN_SECONDS + exit margin."""
    deployment = _one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    grace = float(pod.get("terminationGracePeriodSeconds", 30))
    drain = float(_one(objects, "ConfigMap")["data"].get("SHUTDOWN_DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS))
    problems = []
    for container in pod["containers"]:
        pre_stop = container.get("lifecycle", {}).get("preStop")
        if pre_stop is None:
            problems.append(f"{container['name']}: no preStop (endpoints must drop the pod before SIGTERM)")
            continue
        command = pre_stop.get("exec", {}).get("command", [])
        sleep = float(command[1]) if command[:1] == ["sleep"] else float(pre_stop.get("sleep", {}).get("seconds", 0))
        if sleep <= 0:
            problems.append(f"{container['name']}: preStop does not sleep")
        needed = sleep + drain + EXIT_MARGIN_SECONDS
        if grace <= needed:
            problems.append(
                f"terminationGracePeriodSeconds {grace:g} must exceed preStop {sleep:g} + drain {drain:g}"
                f" + {EXIT_MARGIN_SECONDS:g}"
            )
    return problems


def probe_problems(objects: Objects) -> list[str]:
    """Liveness on /health, readiness on /ready, both on the port the app listens on."""
    deployment = _one(objects, "Deployment")
    app_port = int(_one(objects, "ConfigMap")["data"]["PORT"])
    problems = []
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        if app_port not in ports.values():
            problems.append(f"{container['name']}: PORT {app_port} is not a containerPort")
        for probe_name, path in (
            ("livenessProbe", "/health"),
            ("readinessProbe", "/ready"),
            ("startupProbe", "/health"),
        ):
            probe = container.get(probe_name)
            if probe is None:
                problems.append(f"{container['name']}: no {probe_name}")
                continue
            http_get = probe.get("httpGet", {})
            if http_get.get("path") != path:
                problems.append(f"{container['name']}: {probe_name} path {http_get.get('path')} is not {path}")
            port = http_get.get("port")
            resolved = ports.get(port) if isinstance(port, str) else port
            if resolved != app_port:
                problems.append(f"{container['name']}: {probe_name} port {port} is not the app's port {app_port}")
    return problems


def selector_problems(objects: Objects) -> list[str]:
    """The Deployment's selector, the Service, the PDB and the HPA all find the API pods."""
    deployment = _one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    problems = []
    if not _labels_match(deployment["spec"]["selector"]["matchLabels"], pod_labels):
        problems.append("Deployment selector does not match its pod template labels")
    service = _one(objects, "Service")
    if not _labels_match(service["spec"]["selector"], pod_labels):
        problems.append("Service selector does not match the API pods")
    container_ports = {
        p.get("name"): p["containerPort"]
        for c in deployment["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        if target not in container_ports and target not in container_ports.values():
            problems.append(f"Service targetPort {target} is not a container port")
    pdb = _one(objects, "PodDisruptionBudget")
    if not _labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels):
        problems.append("PodDisruptionBudget selector does not match the API pods")
    hpa = _one(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    if (target["apiVersion"], target["kind"], target["name"]) != (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    ):
        problems.append(f"HPA targets {target}, not the Deployment")
    if hpa["spec"].get("minReplicas", 1) < 2:
        problems.append("HPA minReplicas < 2: a PDB cannot keep the service up through a drain")
    if "replicas" in deployment["spec"]:
        problems.append("Deployment sets replicas: every apply would reset what the HPA chose")
    max_unavailable = pdb["spec"].get("maxUnavailable")
    if max_unavailable is None or max_unavailable < 1 or max_unavailable >= hpa["spec"].get("minReplicas", 1):
        problems.append("PDB must allow one disruption at a time while keeping a pod serving")
    return problems


def hardening_problems(objects: Objects) -> list[str]:
    """Non-root (the image's uid), read-only root file system, no privileges, bounded resources."""
    final_stage = parse_dockerfile(DOCKERFILE.read_text())[1]
    (image_user,) = final_stage.args_of("USER")
    image_uid = int(image_user.split(":")[0])
    problems = []
    for kind in ("Deployment", "Job"):
        doc = _one(objects, kind)
        pod = _pod_spec(doc)
        assert pod is not None
        pod_security = pod.get("securityContext", {})
        if pod_security.get("runAsNonRoot") is not True:
            problems.append(f"{kind}: runAsNonRoot is not true")
        if pod_security.get("runAsUser") != image_uid:
            problems.append(f"{kind}: runAsUser {pod_security.get('runAsUser')} is not the image's uid {image_uid}")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{kind}: mounts a service account token it does not use")
        for container in pod["containers"]:
            security = container.get("securityContext", {})
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{kind}/{container['name']}: root file system is writable")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{kind}/{container['name']}: privilege escalation allowed")
            if security.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{kind}/{container['name']}: capabilities not dropped")
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(bound, {})):
                    problems.append(f"{kind}/{container['name']}: no cpu and memory {bound}")
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            if "/tmp" not in mounts:  # noqa: S108 - the writable scratch folder of a read-only pod
                problems.append(f"{kind}/{container['name']}: no writable /tmp")
    return problems


def config_problems(objects: Objects) -> list[str]:
    """Both pods read the ConfigMap and the Secret; every key is a documented setting, none in both."""
    config_map = _one(objects, "ConfigMap")
    template = load_yaml(SECRET_TEMPLATE)
    documented = env_example_names()
    problems = []
    for kind in ("Deployment", "Job"):
        for container in _containers(_one(objects, kind)):
            refs = {
                ("ConfigMap", ref["configMapRef"]["name"])
                if "configMapRef" in ref
                else ("Secret", ref["secretRef"]["name"])
                for ref in container.get("envFrom", [])
            }
            expected = {("ConfigMap", config_map["metadata"]["name"]), ("Secret", template["metadata"]["name"])}
            if refs != expected:
                problems.append(f"{kind}/{container['name']}: envFrom {sorted(refs)} is not {sorted(expected)}")
    for key in sorted(set(config_map["data"]) - documented):
        problems.append(f"ConfigMap key {key} is not in .env.example")
    for key in sorted(set(template["stringData"]) - documented):
        problems.append(f"Secret key {key} is not in .env.example")
    for key in sorted(set(config_map["data"]) & set(template["stringData"])):
        problems.append(f"{key} is in both the ConfigMap and the Secret")
    return problems


def migration_problems(objects: Objects) -> list[str]:
    deployment, job = _one(objects, "Deployment"), _one(objects, "Job")
    (api,) = _containers(deployment)
    (migrate,) = _containers(job)
    problems = []
    if migrate["image"] != api["image"]:
        problems.append("the migration Job runs another image than the Deployment")
    if migrate.get("command", migrate.get("args")) != ["agent-api", "migrate"]:
        problems.append("the migration Job does not run `agent-api migrate`")
    if api.get("command", api.get("args")) != ["agent-api", "serve"]:
        problems.append("the Deployment does not run `agent-api serve`")
    if job["spec"]["template"]["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append("the migration Job must not restart forever")
    if _one(objects, "ConfigMap")["data"].get("DATABASE_AUTO_MIGRATE") != "false":
        problems.append("pods must not migrate at start-up (replicas would race): DATABASE_AUTO_MIGRATE=false")
    return problems


RULES: list[Callable[[Objects], list[str]]] = [
    stop_budget_problems,
    probe_problems,
    selector_problems,
    hardening_problems,
    config_problems,
    migration_problems,
]


# --- the real manifests ------------------------------------------------------------------------


def test_renders_every_kind_the_issue_asks_for(objects: Objects) -> None:
    kinds = sorted(kind for kind, _ in objects)
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "PodDisruptionBudget", "Service"]
    )
    assert _containers(_one(objects, "Deployment"))[0]["image"] == "agent-api:0.1.0"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_matches_the_kubernetes_schema(objects: Objects, version: str) -> None:
    for doc in [*objects.values(), load_yaml(SECRET_TEMPLATE)]:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_consistency_rule_holds(objects: Objects, rule: Callable[[Objects], list[str]]) -> None:
    assert rule(objects) == []


def test_hpa_and_pdb_use_the_stable_apis(objects: Objects) -> None:
    assert _one(objects, "HorizontalPodAutoscaler")["apiVersion"] == "autoscaling/v2"
    assert _one(objects, "PodDisruptionBudget")["apiVersion"] == "policy/v1"


def test_secret_template_is_not_applied_and_holds_only_refused_placeholders() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert SECRET_TEMPLATE.name not in kustomization["resources"]
    template = load_yaml(SECRET_TEMPLATE)
    assert template["kind"] == "Secret"
    assert "data" not in template
    values = template["stringData"]
    for name in ("JWT_SECRET", "API_KEY_PEPPER"):
        assert secret_problem(values[name]) is not None, name  # the service refuses to start with it
    for name, value in values.items():
        assert "change-me" in value, name


def test_every_manifest_file_is_either_applied_or_the_template() -> None:
    listed = set(load_yaml(K8S / "kustomization.yaml")["resources"])
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert files - listed == {SECRET_TEMPLATE.name}
    assert listed <= files


def test_the_renderer_agrees_with_kubectl_kustomize() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the built-in renderer is checked by the other tests only")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True)
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}
    assert rendered == render_kustomization()


# --- the rules catch what they are for ---------------------------------------------------------


def _broken(objects: Objects, edit: Callable[[Objects], None]) -> Objects:
    copied = copy.deepcopy(objects)
    edit(copied)
    return copied


def _deployment_pod(objects: Objects) -> dict[str, Any]:
    pod: dict[str, Any] = _one(objects, "Deployment")["spec"]["template"]["spec"]
    return pod


def test_stop_budget_rule_catches_kubernetes_default_grace(objects: Objects) -> None:
    broken = _broken(objects, lambda o: _deployment_pod(o).pop("terminationGracePeriodSeconds"))
    assert stop_budget_problems(broken) == ["terminationGracePeriodSeconds 30 must exceed preStop 5 + drain 25 + 2"]


def test_stop_budget_rule_follows_the_configured_drain(objects: Objects) -> None:
    broken = _broken(objects, lambda o: _one(o, "ConfigMap")["data"].update(SHUTDOWN_DRAIN_SECONDS="60"))
    assert stop_budget_problems(broken) != []


def test_probe_rule_catches_swapped_paths_and_a_wrong_port(objects: Objects) -> None:
    def edit(o: Objects) -> None:
        container = _deployment_pod(o)["containers"][0]
        container["readinessProbe"]["httpGet"]["path"] = "/health"
        container["livenessProbe"]["httpGet"]["port"] = 9000

    problems = probe_problems(_broken(objects, edit))
    assert "api: readinessProbe path /health is not /ready" in problems
    assert "api: livenessProbe port 9000 is not the app's port 8000" in problems


def test_selector_rule_catches_drifted_labels(objects: Objects) -> None:
    def edit(o: Objects) -> None:
        _one(o, "Deployment")["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = "web"
        _one(o, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "agent"

    problems = selector_problems(_broken(objects, edit))
    assert "Deployment selector does not match its pod template labels" in problems
    assert "Service selector does not match the API pods" in problems
    assert "PodDisruptionBudget selector does not match the API pods" in problems
    assert any(p.startswith("HPA targets") for p in problems)


def test_hardening_rule_catches_a_writable_root_and_root_user(objects: Objects) -> None:
    def edit(o: Objects) -> None:
        pod = _deployment_pod(o)
        pod["securityContext"]["runAsUser"] = 0
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False

    problems = hardening_problems(_broken(objects, edit))
    assert "Deployment: runAsUser 0 is not the image's uid 10001" in problems
    assert "Deployment/api: root file system is writable" in problems


def test_config_rule_catches_an_undocumented_key(objects: Objects) -> None:
    broken = _broken(objects, lambda o: _one(o, "ConfigMap")["data"].update(NOT_A_SETTING="1"))
    assert config_problems(broken) == ["ConfigMap key NOT_A_SETTING is not in .env.example"]


def test_schema_validation_rejects_a_misspelt_field(objects: Objects) -> None:
    broken = _broken(objects, lambda o: _deployment_pod(o)["containers"][0].update(readinessprobe={}))
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(_one(broken, "Deployment"), KUBERNETES_VERSIONS[-1], strict=True)
