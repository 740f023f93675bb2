"""The Helm chart helm/fanout, rendered by the real Helm engine (helm-python-sdk embeds Helm
as a library; no cluster), every manifest validated against the Kubernetes OpenAPI schemas
(kubernetes-validate), and the rendered configuration run by the real gateway."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml

from conftest import REPO, gateway, http_get

CHART = REPO / "helm" / "fanout"
RELEASE, NAMESPACE = "rt", "realtime"
FULLNAME = "rt-fanout"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a recent one.
KUBE_VERSIONS = ["1.25.0", "1.34.0"]
# Kinds of CRDs the schemas do not know: checked field by field below instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

JWT_SECRET = "chart-test-secret-0123456789abcdefghij"
EXTERNAL_REDIS = {"redis": {"url": "rediss://redis.example.internal:6380/0"}}

# name -> values: each renders, validates, and is checked for its own properties below.
MATRIX = {
    "defaults": {},
    "hpa": {**EXTERNAL_REDIS, "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12,
                                              "connectionsPerPod": 20000}},
    "ingress": {"ingress": {"enabled": True, "hosts": [{"host": "rt.example.com", "paths": [
        {"path": "/", "pathType": "Prefix"}]}], "tls": [{"secretName": "rt-tls", "hosts": ["rt.example.com"]}]}},
    "existing_secret": {"replicaCount": 3, "secrets": {"existingSecret": "fanout-keys", "redisUrlKey": "redis-url"}},
    "bundled_redis": {"replicaCount": 2, "redis": {"bundled": {"enabled": True}},
                      "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "public_key": {"auth": {"jwtPublicKey": (REPO / "tests" / "fixtures" / "ec_public.pem").read_text()}},
    "redis_tls": {"replicaCount": 2, "redis": {"url": "rediss://redis.example.internal:6380/0", "tls": {
        "existingSecret": "redis-tls", "caKey": "ca.crt", "certKey": "tls.crt", "keyKey": "tls.key"}}},
    "namespaces_and_api_keys": {
        "secrets": {"jwtSecret": JWT_SECRET, "apiKeys": ["backend-1", "backend-2"]},
        "config": {"drain_s": 20, "max_connections": 200000, "allowed_origins": ["https://app.example.com"],
                   "namespaces": {"room": {"public": True, "presence": True},
                                  "dag": {"history_size": 5000, "history_ttl_s": 7200},
                                  "agent": {}}},
    },
}


def render(values: dict) -> dict[str, dict]:
    """Renders the chart; returns its objects keyed by `Kind/name`."""
    with helm_python.Chart.load(CHART) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    objects = {}
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def notes(values: dict) -> str:
    with helm_python.Chart.load(CHART) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return next(text for path, text in files.items() if path.endswith("NOTES.txt"))


def gateway_container(objects: dict) -> dict:
    (container,) = objects[f"Deployment/{FULLNAME}"]["spec"]["template"]["spec"]["containers"]
    return container


def config_toml(objects: dict) -> str:
    return objects[f"ConfigMap/{FULLNAME}"]["data"]["fanout.toml"]


@pytest.fixture(scope="module", params=sorted(MATRIX))
def case(request) -> tuple[str, dict, dict]:
    values = MATRIX[request.param]
    return request.param, values, render(values)


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_chart_lints_clean_in_strict_mode(name):
    for version in KUBE_VERSIONS:
        report = helm_python.lint(CHART, MATRIX[name], strict=True, kube_version=f"v{version}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, report


def test_chart_version_matches_the_gateway():
    cargo_version = next(line.split('"')[1] for line in (REPO / "Cargo.toml").read_text().splitlines()
                         if line.startswith("version"))
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == cargo_version


def test_every_manifest_validates(case):
    name, _, objects = case
    for key, doc in objects.items():
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{name}: {key} invalid for Kubernetes {version}: {e.message} at {list(e.path)}")


def test_pods_are_locked_down(case):
    _, _, objects = case
    for key, doc in objects.items():
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, key
        assert pod["automountServiceAccountToken"] is False, key
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, key
            assert sc["allowPrivilegeEscalation"] is False, key
            assert sc["capabilities"]["drop"] == ["ALL"], key
            assert container["resources"]["requests"], key


def test_gateway_probes_config_and_secrets(case):
    name, values, objects = case
    deployment = objects[f"Deployment/{FULLNAME}"]
    pod = deployment["spec"]["template"]["spec"]
    container = gateway_container(objects)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]

    # The configuration file is mounted where the gateway is told to read it.
    config_arg = container["args"][container["args"].index("--config") + 1]
    (mount,) = [m for m in container["volumeMounts"] if config_arg.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert mount["readOnly"] is True
    assert volume["configMap"]["name"] == FULLNAME
    assert Path(config_arg).name in objects[f"ConfigMap/{FULLNAME}"]["data"]
    assert 'listen = "0.0.0.0:8080"' in config_toml(objects)

    # Secrets come from a Secret, never from the ConfigMap.
    env = {e["name"]: e for e in container["env"]}
    secret_name = values.get("secrets", {}).get("existingSecret") or FULLNAME
    if values.get("auth", {}).get("jwtPublicKey"):
        assert "FANOUT_JWT_SECRET" not in env
        assert 'jwt_public_key = "/etc/fanout/jwt-public-key.pem"' in config_toml(objects)
        assert "jwt-public-key.pem" in objects[f"ConfigMap/{FULLNAME}"]["data"]
    else:
        assert env["FANOUT_JWT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == secret_name
    assert env["FANOUT_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "jwt_secret" not in config_toml(objects) and "api_key" not in config_toml(objects)
    if values.get("secrets", {}).get("existingSecret"):
        assert not any(k.startswith("Secret/") for k in objects), "existingSecret: the chart creates no Secret"
        assert env["FANOUT_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "fanout-keys", "key": "redis-url"}
    elif "FANOUT_JWT_SECRET" in env:
        data = objects[f"Secret/{FULLNAME}"]["data"]
        assert len(base64.b64decode(data["jwt-secret"])) >= 32


def test_shutdown_outlasts_the_drain(case):
    _, _, objects = case
    pod = objects[f"Deployment/{FULLNAME}"]["spec"]["template"]["spec"]
    container = gateway_container(objects)
    drain_s = int(next(line for line in config_toml(objects).splitlines()
                       if line.startswith("drain_s")).split("=")[1])
    sleep_command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep_command[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(sleep_command[1]) + drain_s
    rolling = objects[f"Deployment/{FULLNAME}"]["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0


def test_replicas_spread_and_disruptions_bounded(case):
    _, _, objects = case
    deployment = objects[f"Deployment/{FULLNAME}"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}
    assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)
    pdb = objects[f"PodDisruptionBudget/{FULLNAME}"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    service = objects[f"Service/{FULLNAME}"]
    assert service["spec"]["selector"] == selector
    assert service["spec"]["sessionAffinity"] == "None"


def test_hpa_scales_on_cpu_and_connections():
    objects = render(MATRIX["hpa"])
    assert "replicas" not in objects[f"Deployment/{FULLNAME}"]["spec"], "the HPA owns the replica count"
    hpa = objects[f"HorizontalPodAutoscaler/{FULLNAME}"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    assert by_type["Pods"]["pods"]["metric"]["name"] == "fanout_connections"
    assert by_type["Pods"]["pods"]["target"] == {"type": "AverageValue", "averageValue": "20000"}
    assert 'redis_url = "rediss://redis.example.internal:6380/0"' in config_toml(objects)
    assert "HorizontalPodAutoscaler/" + FULLNAME not in render({})


def test_redis_tls_files_come_from_the_secret_read_only(tmp_path, fanout_bin):
    """rediss:// with a CA and a client certificate from an existing Secret: mounted
    read-only, passed as the redis_tls_* settings, and accepted by the real gateway's
    check-config with real PEM files (made with openssl) where the Secret would be."""
    objects = render(MATRIX["redis_tls"])
    pod = objects[f"Deployment/{FULLNAME}"]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "redis-tls"]
    assert volume["secret"]["secretName"] == "redis-tls"
    assert volume["secret"]["defaultMode"] == 0o440
    assert [i["key"] for i in volume["secret"]["items"]] == ["ca.crt", "tls.crt", "tls.key"]
    (mount,) = [m for m in gateway_container(objects)["volumeMounts"] if m["name"] == "redis-tls"]
    assert mount == {"name": "redis-tls", "mountPath": "/etc/fanout-redis-tls", "readOnly": True}
    toml = config_toml(objects)
    assert 'redis_tls_ca_file = "/etc/fanout-redis-tls/ca.crt"' in toml
    assert 'redis_tls_cert_file = "/etc/fanout-redis-tls/tls.crt"' in toml
    assert 'redis_tls_key_file = "/etc/fanout-redis-tls/tls.key"' in toml
    assert "redis-tls" not in json.dumps(render(EXTERNAL_REDIS)), "no TLS volume unless asked"

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", "-new", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=chart test CA")
    openssl("req", "-new", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=fanout")
    (tmp_path / "tls.ext").write_text("extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "tls.crt", "-days", "1", "-extfile", "tls.ext")
    config_file = tmp_path / "fanout.toml"
    config_file.write_text(toml.replace("/etc/fanout-redis-tls/", f"{tmp_path}/"))
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    check = subprocess.run([fanout_bin, "check-config", "--config", config_file],
                           env=clean_env | rendered_environment(objects),
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"TLS, server certificate checked against {tmp_path}/ca.crt" in check.stdout
    assert f"client certificate {tmp_path}/tls.crt" in check.stdout


def test_ingress_is_websocket_friendly_and_not_sticky():
    objects = render(MATRIX["ingress"])
    ingress = objects[f"Ingress/{FULLNAME}"]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert not any("affinity" in k or "upstream-hash-by" in k for k in annotations)
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["secretName"] == "rt-tls"
    assert "wss://rt.example.com/ws" in notes(MATRIX["ingress"])


def test_bundled_redis_and_service_monitor():
    objects = render(MATRIX["bundled_redis"])
    redis_name = f"{FULLNAME}-redis"
    redis = objects[f"Deployment/{redis_name}"]["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][:4] == ["redis-server", "--save", "", "--appendonly"]
    assert objects[f"Service/{redis_name}"]["spec"]["ports"][0]["port"] == 6379
    assert f'redis_url = "redis://{redis_name}:6379/0"' in config_toml(objects)
    # The gateway's selectors must not pick the Redis pods up.
    gateway_selector = objects[f"Service/{FULLNAME}"]["spec"]["selector"]
    redis_labels = objects[f"Deployment/{redis_name}"]["spec"]["template"]["metadata"]["labels"]
    assert not gateway_selector.items() <= redis_labels.items()
    # Without a password, only the gateways may reach it.
    policy = objects[f"NetworkPolicy/{redis_name}"]["spec"]
    assert policy["podSelector"]["matchLabels"] == objects[f"Service/{redis_name}"]["spec"]["selector"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": gateway_selector}}]

    monitor = objects[f"ServiceMonitor/{FULLNAME}"]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"] == gateway_selector
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert "ServiceMonitor/" + FULLNAME not in render({})
    assert not any(k.endswith("-redis") for k in render({})), "no bundled Redis by default"


@pytest.mark.parametrize("values, complaint", [
    ({"replicaCount": "three"}, "replicaCount"),
    ({"config": {"jwt_secret": "x" * 40}}, "jwt_secret"),
    ({"config": {"max_connections": -1}}, "max_connections"),
    ({"secrets": {"jwtSecret": "too-short"}}, "jwtSecret"),
    ({"redis": {"url": "http://redis:6379"}}, "url"),
    ({"ingress": {"enabled": "yes"}}, "enabled"),
])
def test_schema_rejects_bad_values(values, complaint):
    with pytest.raises(helm_python.HelmError) as error:
        render(values)
    assert complaint in str(error.value)


@pytest.mark.parametrize("values, complaint", [
    ({"replicaCount": 3}, "shared Redis"),
    ({"autoscaling": {"enabled": True}}, "shared Redis"),
    ({"terminationGracePeriodSeconds": 12}, "must exceed"),
    ({"secrets": {"existingSecret": "s", "apiKeys": ["k"]}}, "existingSecret"),
    ({"redis": {"url": "redis://r:6379", "tls": {"existingSecret": "t"}}}, "needs a rediss://"),
    ({"redis": {"bundled": {"enabled": True}, "tls": {"existingSecret": "t"}}}, "bundled Redis has no TLS"),
    ({**EXTERNAL_REDIS, "redis": {**EXTERNAL_REDIS["redis"], "tls": {"existingSecret": "t", "certKey": "c"}}},
     "go together"),
    ({**EXTERNAL_REDIS, "redis": {**EXTERNAL_REDIS["redis"], "tls": {"certKey": "c", "keyKey": "k"}}},
     "set it"),
])
def test_chart_refuses_unsafe_combinations(values, complaint):
    with pytest.raises(helm_python.HelmError) as error:
        render(values)
    assert complaint in str(error.value)


# --- the rendered configuration on the real gateway ----------------------------------------

def rendered_environment(objects: dict) -> dict[str, str]:
    """The gateway container's environment as the kubelet would set it, secretKeyRefs
    resolved from the chart's Secret."""
    secret = {k: base64.b64decode(v).decode() for k, v in objects[f"Secret/{FULLNAME}"]["data"].items()}
    env = {}
    for item in gateway_container(objects)["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            env[item["name"]] = item["value"]
        elif ref["key"] in secret:
            env[item["name"]] = secret[ref["key"]]
        else:
            assert ref.get("optional"), f"{item['name']}: key {ref['key']} missing from the Secret"
    return env


@pytest.mark.parametrize("name", ["defaults", "public_key", "namespaces_and_api_keys"])
def test_rendered_config_runs_on_the_gateway(name, fanout_bin, tmp_path):
    """The ConfigMap's files (as mounted, in tmp_path instead of /etc/fanout) and the
    Secret's environment, given to the real gateway: it accepts them (check-config), serves
    the probes' paths, and takes the API keys."""
    objects = render(MATRIX[name])
    for file_name, content in objects[f"ConfigMap/{FULLNAME}"]["data"].items():
        (tmp_path / file_name).write_text(content.replace("/etc/fanout/", f"{tmp_path}/"))
    config_file = tmp_path / "fanout.toml"
    settings = rendered_environment(objects)
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    check = subprocess.run([fanout_bin, "check-config", "--config", config_file],
                           env=clean_env | settings, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr

    container = gateway_container(objects)
    assert container["args"] == ["serve", "--config", "/etc/fanout/fanout.toml"]
    # The container's arguments with the file's local path; --listen (flag beats file) keeps
    # the gateway on loopback.
    with gateway(fanout_bin, tmp_path, "--config", str(config_file), settings=settings) as base:
        for probe in ("livenessProbe", "readinessProbe"):
            assert http_get(base + container[probe]["httpGet"]["path"])[0] == 200
        request = urllib.request.Request(
            f"{base}/api/publish", method="POST",
            data=json.dumps({"channel": "room:lobby", "data": {"type": "ping"}}).encode(),
            headers={"content-type": "application/json", "authorization": "Bearer backend-2"})
        if "apiKeys" in MATRIX[name].get("secrets", {}):
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
        else:
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code in (401, 403, 404)
