"""deploy/kubernetes/, checked offline: every manifest against the Kubernetes API schemas that the
`kubernetes-validate` package bundles (strict: unknown fields are errors), structural checks of the
deployment (probes, drain timing, non-root, read-only root, secrets by reference), agreement with
docker-compose.yml (settings names, port), and `kustomize build` of the CPU and GPU variants with
the `kustomize` binary or `kubectl kustomize`, when one is installed.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the manifests (pip install pyyaml)")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate (the `dev` extra) is needed for the schema checks")

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
BASE = K8S / "base"
GPU = K8S / "gpu"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"

# The oldest Kubernetes minor these manifests target (autoscaling/v2, policy/v1 and the probe fields
# used are all GA there); the newest bundled schema is checked too.
KUBERNETES_VERSION = "1.30.0"
SECRET_SETTINGS = {"SAINET_REDIS_URL", "SAINET_ADMIN_TOKEN", "SAINET_WRITE_TOKEN"}


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifest_files() -> list[Path]:
    return sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")


def _resources() -> dict[str, dict]:
    """kind -> the one resource of that kind in base/."""
    found: dict[str, dict] = {}
    for path in _manifest_files():
        for doc in _documents(path):
            assert doc["kind"] not in found, f"two {doc['kind']} resources"
            found[doc["kind"]] = doc
    return found


def _validate(resource: dict, version: str = KUBERNETES_VERSION) -> None:
    kubernetes_validate.validate(resource, version, strict=True)


def _kustomize_command() -> list[str] | None:
    if binary := shutil.which("kustomize"):
        return [binary, "build"]
    if kubectl := shutil.which("kubectl"):
        probe = subprocess.run([kubectl, "kustomize", "--help"], check=False, capture_output=True, text=True,
                               timeout=60)
        if probe.returncode == 0:
            return [kubectl, "kustomize"]
    return None


@pytest.fixture(scope="module")
def kustomize() -> list[str]:
    command = _kustomize_command()
    if command is None:
        pytest.skip("neither `kustomize` nor `kubectl kustomize` is installed; the manifests were still "
                    "schema-checked one by one")
    return command


def _build(kustomize: list[str], directory: Path) -> list[dict]:
    result = subprocess.run([*kustomize, str(directory)], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _by_kind(resources: list[dict]) -> dict[str, dict]:
    kinds: dict[str, dict] = {}
    for resource in resources:
        assert resource["kind"] not in kinds, resource["kind"]
        kinds[resource["kind"]] = resource
    return kinds


def _container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _compose_service_environment() -> dict[str, str]:
    return {k: str(v) for k, v in yaml.safe_load(COMPOSE_FILE.read_text())["x-service-environment"].items()}


# ------------------------------------------------------------------------------------------ schemas

@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.name)
@pytest.mark.parametrize("version", [KUBERNETES_VERSION, kubernetes_validate.latest_version()])
def test_every_manifest_validates(path, version):
    documents = _documents(path)
    assert documents, path
    for document in documents:
        _validate(document, version)


def test_the_kustomizations_name_every_manifest():
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in _manifest_files())
    assert yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"] == ["base"]
    assert yaml.safe_load((GPU / "kustomization.yaml").read_text())["resources"] == ["../base"]


def test_schema_validation_can_fail():
    """Negative control: the same validation rejects broken copies of the Deployment."""
    deployment = _resources()["Deployment"]
    _validate(deployment)

    misspelt = copy.deepcopy(deployment)
    container = _container(misspelt)
    container["readinessProbes"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(misspelt)

    wrong_type = copy.deepcopy(deployment)
    _container(wrong_type)["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(wrong_type)

    missing = copy.deepcopy(deployment)
    del missing["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(missing)

    unknown_version = copy.deepcopy(_resources()["HorizontalPodAutoscaler"])
    unknown_version["apiVersion"] = "autoscaling/v9"
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        _validate(unknown_version)


# --------------------------------------------------------------------------------------- structure

def test_deployment_probes_and_drain():
    resources = _resources()
    deployment = resources["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    named_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named_ports == {"http": 8000}

    def probe_target(probe: dict) -> tuple[str, int]:
        port = probe["httpGet"]["port"]
        return probe["httpGet"]["path"], named_ports.get(port, port)

    assert probe_target(container["readinessProbe"]) == ("/v2/health/ready", 8000)
    assert probe_target(container["livenessProbe"]) == ("/v2/health/live", 8000)
    if "startupProbe" in container:
        assert probe_target(container["startupProbe"])[0] == "/v2/health/live"

    # preStop pause, then SIGTERM and the bounded drain: the grace period covers both, with margin.
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        pause = int(pre_stop["sleep"]["seconds"])
    else:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep" and len(command) == 2, command
        pause = int(command[1])
    assert pause >= 3, "long enough for the endpoint removal to reach the load balancers"
    drain = float(resources["ConfigMap"]["data"]["SAINET_SHUTDOWN_GRACE_SECONDS"])
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > pause + drain, (grace, pause, drain)
    assert grace >= pause + drain + 5, "a margin for the process to exit after the drain"

    # Rolling updates never drop below the current capacity.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    resources_ = container["resources"]
    assert resources_["requests"]["cpu"] and resources_["requests"]["memory"]
    assert resources_["limits"]["memory"]


def test_deployment_runs_unprivileged_on_a_read_only_root():
    deployment = _resources()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    assert "USER 10001:10001" in DOCKERFILE.read_text()
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]], "a writable /tmp"
    models = mounts["/models"]
    assert models["readOnly"] is True
    claim = volumes[models["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == _resources()["PersistentVolumeClaim"]["metadata"]["name"]
    assert _resources()["ConfigMap"]["data"]["SAINET_MODEL_DIR"] == "/models"


def test_secrets_are_referenced_never_inlined():
    resources = _resources()
    assert "Secret" not in resources, "no Secret with values in the repository"
    for path in sorted(K8S.rglob("*.yaml")):
        for document in _documents(path):
            assert document.get("kind") != "Secret", path
            assert "secretGenerator" not in document and "stringData" not in document, path
    container = _container(resources["Deployment"])
    env = {e["name"]: e for e in container["env"]}
    assert SECRET_SETTINGS <= set(env)
    for name in SECRET_SETTINGS:
        assert "value" not in env[name], name
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert reference["name"] == "sainet-secrets" and reference["key"], name
    for entry in container["env"]:
        if "value" in entry:
            assert not re.search(r"TOKEN|PASSWORD|SECRET|REDIS_URL", entry["name"]), entry["name"]
    assert not SECRET_SETTINGS & set(resources["ConfigMap"]["data"]), "secrets in the ConfigMap"
    assert container["envFrom"] == [{"configMapRef": {"name": resources["ConfigMap"]["metadata"]["name"]}}]


def test_service_hpa_and_pdb_select_the_deployment():
    resources = _resources()
    deployment = resources["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    service = resources["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8000, "http")]

    hpa = resources["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= 2, "a PDB with one replica blocks every drain"
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    cpu = [m["resource"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert cpu and cpu[0]["name"] == "cpu" and cpu[0]["target"]["type"] == "Utilization"
    assert _container(deployment)["resources"]["requests"]["cpu"], "Utilization needs a CPU request"

    pdb = resources["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable", 0) < hpa["spec"]["minReplicas"]


def test_compose_and_kubernetes_describe_the_same_deployment():
    resources = _resources()
    settings = resources["ConfigMap"]["data"]
    compose = _compose_service_environment()
    # Every setting compose gives the service is given on Kubernetes, with the same value, except
    # the Redis URL (a Secret there; the compose-internal `redis` host here).
    for name, value in compose.items():
        if name in SECRET_SETTINGS:
            continue
        assert settings.get(name) == value, (name, settings.get(name), value)
    assert all(name.startswith(("SAINET_", "CUDA_")) for name in settings)
    # The names are the service's own settings (no typo reaches production).
    from service.settings import Settings

    known = {f"SAINET_{name.upper()}" for name in Settings.model_fields}
    known |= {"SAINET_REDIS_CLUSTER"}  # issue 16 item 1: the service's next setting
    for name in [*settings, *SECRET_SETTINGS, *compose]:
        assert name in known, name

    container = _container(resources["Deployment"])
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert services["service"]["expose"] == [str(container["ports"][0]["containerPort"])]
    assert container["args"] == ["sainet", "serve", "--host", "0.0.0.0", "--port", "8000"]
    cmd = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")]
    assert all(json.loads(line[4:]) == container["args"] for line in cmd if "serve" in line)


def _dockerfile_targets() -> set[str]:
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE.read_text(), re.M | re.I))


def test_gpu_variant_patches():
    kustomization = yaml.safe_load((GPU / "kustomization.yaml").read_text())
    images = {i["name"]: i for i in kustomization["images"]}
    assert images["sainet"]["newTag"] in _dockerfile_targets() and images["sainet"]["newTag"] == "serve-gpu"
    base_images = {i["name"]: i for i in yaml.safe_load((BASE / "kustomization.yaml").read_text())["images"]}
    assert base_images["sainet"]["newTag"] == "serve-cpu" and "serve-cpu" in _dockerfile_targets()
    patch = yaml.safe_load((GPU / "deployment-gpu.yaml").read_text())
    limits = patch["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert str(limits["nvidia.com/gpu"]) == "1"
    settings = yaml.safe_load((GPU / "configmap-gpu.yaml").read_text())["data"]
    assert settings["SAINET_REQUIRE_GPU"] == "1"


# -------------------------------------------------------------------------------------- kustomize

def test_kustomize_build_cpu(kustomize):
    built = _build(kustomize, K8S)
    for resource in built:
        _validate(resource)
        assert resource["kind"] == "Namespace" or resource["metadata"]["namespace"] == "sainet"
    kinds = _by_kind(built)
    assert set(kinds) == {"Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
                          "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    container = _container(kinds["Deployment"])
    assert container["image"] == "sainet:serve-cpu"
    assert "nvidia.com/gpu" not in json.dumps(kinds["Deployment"])


def test_kustomize_build_gpu(kustomize):
    built = _build(kustomize, GPU)
    for resource in built:
        _validate(resource)
    kinds = _by_kind(built)
    deployment = kinds["Deployment"]
    container = _container(deployment)
    assert container["image"] == "sainet:serve-gpu"
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert kinds["ConfigMap"]["data"]["SAINET_REQUIRE_GPU"] == "1"
    # The patch kept everything else: probes, drain, security, secrets.
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {e["name"] for e in container["env"]} >= SECRET_SETTINGS
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    assert any(t["key"] == "nvidia.com/gpu" for t in deployment["spec"]["template"]["spec"]["tolerations"])


def test_kustomize_build_can_fail(kustomize, tmp_path):
    """Negative control: a copy whose kustomization names a missing manifest does not build."""
    copy_dir = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy_dir)
    (copy_dir / "base" / "pdb.yaml").unlink()
    result = subprocess.run([*kustomize, str(copy_dir)], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "pdb.yaml" in result.stderr, result.stderr
