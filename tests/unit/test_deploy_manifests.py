"""The Kubernetes manifests in deploy/: valid for the API server, and run escalator as designed.

Validated offline against the OpenAPI schemas that kubernetes-validate ships, in strict mode (an
unknown or misspelt field fails), for the oldest Kubernetes these manifests claim and the newest
the pinned package knows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices

from escalator.routing import bundled_routing_path
from escalator.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSIONS = ("1.29", "1.37")
NOT_MANIFESTS = {"kustomization.yaml", "routing.yaml"}
SECRET_TEMPLATE = "secret.example.yaml"
PLACEHOLDER = "REPLACE_ME"

Manifest = dict[str, Any]


def _manifests() -> list[tuple[str, Manifest]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name in NOT_MANIFESTS:
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                found.append((path.name, document))
    return found


MANIFESTS = _manifests()


def _one(kind: str, name: str | None = None) -> Manifest:
    matches = [
        manifest
        for _, manifest in MANIFESTS
        if manifest["kind"] == kind and name in (None, manifest["metadata"]["name"])
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''} in deploy/, found {len(matches)}"
    return matches[0]


def _kustomization() -> Manifest:
    document = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _container(workload: Manifest) -> Manifest:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: expected one container"
    container: Manifest = containers[0]
    return container


def _explicit_env(container: Manifest) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in container.get("env", [])}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def _dockerfile(keyword: str) -> str:
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    found = [line.split(maxsplit=1)[1] for line in lines if line.startswith(f"{keyword} ")]
    assert found, f"the Dockerfile has no {keyword}"
    return found[-1]


def _settings_variables() -> set[str]:
    names = set()
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.add(str(alias.choices[0]))
        else:
            names.add(f"ESCALATOR_{field.upper()}")
    return names


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "manifest",
    [manifest for _, manifest in MANIFESTS],
    ids=[
        f"{file}:{manifest['kind']}/{manifest['metadata']['name']}" for file, manifest in MANIFESTS
    ],
)
def test_manifest_is_valid_for_the_kubernetes_api(manifest: Manifest, version: str) -> None:
    problem = None
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        problem = f"Kubernetes {version}: {'.'.join(map(str, error.path))}: {error.message}"
    # Outside the handler: one line, not the validator's traceback.
    assert problem is None, problem


def test_the_validator_refuses_an_unknown_field() -> None:
    broken = json.loads(json.dumps(_one("Deployment")))
    broken["spec"]["replica"] = broken["spec"].pop("replicas")

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_applies_every_manifest_but_the_secret_template() -> None:
    listed = set(_kustomization()["resources"])
    present = {file for file, _ in MANIFESTS}

    assert SECRET_TEMPLATE in present
    assert listed == present - {SECRET_TEMPLATE}


def test_deploy_routing_file_is_the_bundled_one_byte_for_byte() -> None:
    assert (DEPLOY / "routing.yaml").read_bytes() == bundled_routing_path().read_bytes(), (
        "deploy/routing.yaml differs from escalator/resources/routing.yaml: copy it again"
    )


def test_routing_file_is_mounted_from_the_generated_config_map() -> None:
    (generator,) = _kustomization()["configMapGenerator"]
    deployment = _one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    volume = next(
        v for v in pod["volumes"] if v.get("configMap", {}).get("name") == generator["name"]
    )
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])

    assert generator["files"] == ["routing.yaml"]
    assert "subPath" not in mount
    assert (
        _explicit_env(container)["ESCALATOR_ROUTING_FILE"] == f"{mount['mountPath']}/routing.yaml"
    )


def test_deployment_runs_three_replicas_of_the_images_command() -> None:
    deployment = _one("Deployment")

    assert deployment["spec"]["replicas"] == 3
    assert (
        _container(deployment)["args"] == json.loads(_dockerfile("CMD")) == ["escalator", "serve"]
    )


def test_probes_ask_readyz_for_readiness_and_healthz_for_liveness_on_the_served_port() -> None:
    container = _container(_one("Deployment"))
    (port,) = container["ports"]
    probes = {kind: container[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}

    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    # Starting must not wait on the database either, or an outage would restart every pod.
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in (*probes.values(), container["startupProbe"]["httpGet"]):
        assert probe["port"] in (port["name"], port["containerPort"])
    assert port["containerPort"] == int(_explicit_env(container)["ESCALATOR_PORT"])
    assert port["containerPort"] == int(_dockerfile("EXPOSE"))


def test_grace_period_outlasts_the_prestop_sleep_and_the_drain() -> None:
    deployment = _one("Deployment")
    container = _container(deployment)
    sleep_command = container["lifecycle"]["preStop"]["exec"]["command"]
    # The grace setting bounds escalator's whole shutdown, its own shutdown delay included.
    drain = load_settings(_explicit_env(container)).shutdown_grace

    assert sleep_command[0] == "sleep"
    assert 0 < float(sleep_command[1]) <= 10
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(sleep_command[1]) + drain


def test_migrations_run_in_the_job_not_when_pods_start() -> None:
    job = _one("Job")
    server_env = _explicit_env(_container(_one("Deployment")))

    assert load_settings(server_env).migrate_on_start is False
    assert _container(job)["args"] == ["escalator", "migrate"]
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["ttlSecondsAfterFinished"] > 0


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_locked_down_with_bounded_resources(kind: str) -> None:
    workload = _one(kind)
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    security = container["securityContext"]
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(_dockerfile("USER"))
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    # With a Service named escalator, service links would set ESCALATOR_PORT=tcp://...
    assert pod["enableServiceLinks"] is False


def test_pods_spread_across_nodes() -> None:
    template = _one("Deployment")["spec"]["template"]
    by_host = [
        constraint
        for constraint in template["spec"]["topologySpreadConstraints"]
        if constraint["topologyKey"] == "kubernetes.io/hostname"
    ]

    assert len(by_host) == 1
    assert by_host[0]["maxSkew"] == 1
    assert by_host[0]["whenUnsatisfiable"] == "DoNotSchedule"
    assert _selects(by_host[0]["labelSelector"]["matchLabels"], template["metadata"]["labels"])


def test_disruption_budget_selects_the_pods_and_keeps_two_of_three() -> None:
    deployment = _one("Deployment")
    budget = _one("PodDisruptionBudget")["spec"]
    replicas = deployment["spec"]["replicas"]
    kept = (
        replicas - budget["maxUnavailable"]
        if "maxUnavailable" in budget
        else budget["minAvailable"]
    )

    assert _selects(
        budget["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    assert 2 <= kept < replicas


def test_service_sends_port_80_to_the_server_pods_only() -> None:
    service = _one("Service")["spec"]
    deployment = _one("Deployment")
    (port,) = service["ports"]
    (container_port,) = _container(deployment)["ports"]

    assert service["type"] == "ClusterIP"
    assert _selects(service["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert not _selects(service["selector"], _one("Job")["spec"]["template"]["metadata"]["labels"])
    assert port["port"] == 80
    assert port["targetPort"] in (container_port["name"], container_port["containerPort"])
    assert container_port["containerPort"] == 8080


def test_every_environment_variable_is_a_setting() -> None:
    known = _settings_variables()
    used = set(_one("ConfigMap", "escalator-env")["data"]) | set(_one("Secret")["stringData"])
    for kind in ("Deployment", "Job"):
        used |= _explicit_env(_container(_one(kind))).keys()

    assert used - known == set()


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_environment_comes_from_the_config_map_and_the_secret(kind: str) -> None:
    sources = _container(_one(kind))["envFrom"]
    names = {
        "configMapRef": _one("ConfigMap", "escalator-env")["metadata"]["name"],
        "secretRef": _one("Secret")["metadata"]["name"],
    }

    assert sorted(sources, key=str) == sorted(
        ({ref: {"name": name}} for ref, name in names.items()), key=str
    )


def test_secret_template_holds_placeholders_only() -> None:
    secret = _one("Secret")

    assert "data" not in secret
    assert set(secret["stringData"].values()) == {PLACEHOLDER}
    assert secret["stringData"]["ESCALATOR_DATABASE_URL"] == PLACEHOLDER
    assert {"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"} <= secret["stringData"].keys()


def test_configured_values_are_valid_settings() -> None:
    environ = {
        name: value
        for name, value in _one("ConfigMap", "escalator-env")["data"].items()
        if value != PLACEHOLDER
    }
    environ |= _explicit_env(_container(_one("Deployment")))

    settings = load_settings(environ)

    assert settings.port == 8080
    assert settings.host == "0.0.0.0"


def test_the_replicas_together_stay_within_twilios_lookup_limit() -> None:
    # Twilio allows 3 EvaluateTaskAttributes requests a second per workspace, for all replicas.
    replicas = _one("Deployment")["spec"]["replicas"]
    rate = float(_one("ConfigMap", "escalator-env")["data"]["ESCALATOR_LOOKUP_RATE_PER_SECOND"])

    assert replicas * rate <= 3
