"""The Helm chart helm/fanout, rendered by the real Helm engine (helm-python-sdk embeds Helm
as a library; no cluster), every manifest validated against the Kubernetes OpenAPI schemas
(kubernetes-validate) and its custom resources against the Gateway API and Prometheus
Operator schemas (tests/deploy/validate_crds.mjs), every rendered configuration checked by
the real gateway (check-config) and some run by it (serve), the `helm test` script included."""

from __future__ import annotations

import base64
import copy
import importlib.machinery
import importlib.util
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml

from conftest import REPO, gateway, gateway_with_internal, http_get

CHART = REPO / "helm" / "fanout"
RELEASE, NAMESPACE = "rt", "realtime"
FULLNAME = "rt-fanout"
INTERNAL = "rt-fanout-internal"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a recent one.
KUBE_VERSIONS = ["1.27.0", "1.34.0"]
# Custom resources: validated by validate_crds.mjs instead of kubernetes-validate.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"),
             ("monitoring.coreos.com/v1", "PrometheusRule"),
             ("gateway.networking.k8s.io/v1", "HTTPRoute")}
CLIENT_PATHS = ["/ws", "/sse", "/sse/frames", "/sse/ticket"]

JWT_SECRET = "chart-test-secret-0123456789abcdefghij"
KEY = {"secrets": {"jwtSecret": JWT_SECRET}}
REDIS_PASSWORD = "chart-test-redis-Pa55word"
EXTERNAL_REDIS = {"redis": {"url": "rediss://redis.example.internal:6380/0"}}
CLUSTER_SEEDS = [f"redis://redis-cluster-{i}.redis-cluster-headless:6379" for i in range(3)]

# Secrets the values name but the chart does not create: what the cluster would hold.
EXTERNAL_SECRETS = {
    "fanout-keys": {
        "jwt-secret": "existing-secret-jwt-0123456789abcdefghij",
        "api-keys": "backend-1,backend-2",
        "redis-url": f"redis://:{REDIS_PASSWORD}@redis.example.internal:6379/0",
        "redis-cluster-url": ",".join(f"rediss://:{REDIS_PASSWORD}@10.0.0.{i}:6380" for i in (1, 2, 3)),
    },
    "redis-cluster": {"redis-password": REDIS_PASSWORD},
    "fanout-extra": {"FANOUT_LOG_LEVEL": "debug"},
}

# name -> values: each renders, validates, passes check-config, and is checked for its own
# properties below.
MATRIX = {
    "minimal": KEY,
    "hpa": {**KEY, **EXTERNAL_REDIS, "autoscaling": {
        "enabled": True, "minReplicas": 3, "maxReplicas": 12, "connectionsPerPod": 20000,
        "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}}}},
    "ingress": {**KEY, "ingress": {"enabled": True, "hosts": [{"host": "rt.example.com"}],
                                   "tls": [{"secretName": "rt-tls", "hosts": ["rt.example.com"]}]}},
    "existing_secret": {"replicaCount": 3, "secrets": {"existingSecret": "fanout-keys", "redisUrlKey": "redis-url"}},
    "bundled_redis": {**KEY, "replicaCount": 2, "redis": {"bundled": {"enabled": True}}},
    "public_key": {"auth": {"jwtPublicKey": (REPO / "tests" / "fixtures" / "ec_public.pem").read_text()}},
    "redis_tls": {**KEY, "replicaCount": 2, "redis": {"url": "rediss://redis.example.internal:6380/0", "tls": {
        "existingSecret": "redis-tls", "caKey": "ca.crt", "certKey": "tls.crt", "keyKey": "tls.key"}}},
    "namespaces_and_api_keys": {
        "secrets": {"jwtSecret": JWT_SECRET, "apiKeys": ["backend-1", "backend-2"]},
        "config": {"drain_s": 20, "max_connections": 200000, "allowed_origins": ["https://app.example.com"],
                   "write_delay_ms": 5, "trusted_proxies": ["10.0.0.1"],
                   "namespaces": {"room": {"public": True, "presence": True},
                                  "dag": {"history_size": 5000, "history_ttl_s": 7200},
                                  "agent": {}}},
    },
    "redis_cluster_hpa": {**KEY, "replicaCount": 3, "redis": {
        "cluster": {"seeds": CLUSTER_SEEDS},
        "auth": {"existingSecret": "redis-cluster", "passwordKey": "redis-password"}},
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 9}},
    "redis_cluster_tls_existing_secret": {
        "replicaCount": 3,
        "secrets": {"existingSecret": "fanout-keys", "redisClusterUrlKey": "redis-cluster-url"},
        "redis": {"tls": {"existingSecret": "redis-tls", "caKey": "ca.crt"}}},
    "monitoring": {**KEY, **EXTERNAL_REDIS, "replicaCount": 3,
                   "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                   "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"},
                                      "runbookBaseUrl": "https://runbooks.example.com/fanout/operations.md"},
                   "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1536Mi"}}},
    "gateway_api": {
        "secrets": {"jwtSecret": JWT_SECRET, "apiKeys": ["backend-1"]},
        "config": {"demo": True}, "internal": {"apiOnPublic": True},
        "httpRoute": {"enabled": True, "hostnames": ["rt.example.com"], "api": True,
                      "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}]}},
    "single_port": {
        "secrets": {"jwtSecret": JWT_SECRET, "apiKeys": ["backend-1"]}, "internal": {"enabled": False},
        "serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
        "ingress": {"enabled": True, "api": True}},
    "extras": {
        **KEY,
        "image": {"registry": "registry.example.com", "repository": "realtime/fanout", "digest": "sha256:" + "ab" * 32},
        "envFrom": [{"secretRef": {"name": "fanout-extra"}}],
        "extraEnv": [{"name": "RELEASE_NAME", "value": "{{ .Release.Name }}"}],
        "initContainers": [{"name": "wait", "image": "busybox:1.36", "command": ["true"]}],
        "extraContainers": [{"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "infinity"]}],
        "extraObjects": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "{{ .Release.Name }}-extra"},
             "data": {"release": "{{ .Release.Name }}"}},
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rt-extra-text\ndata:\n  a: b\n"],
        "podAnnotations": {"reloader.stakater.com/auto": "true"},
        "probes": {"startup": {"path": "/healthz", "periodSeconds": 1, "failureThreshold": 120}}},
}


def chart_docs():
    """scripts/update-chart-docs, imported (its name has no .py)."""
    path = REPO / "scripts" / "update-chart-docs"
    loader = importlib.machinery.SourceFileLoader("update_chart_docs", str(path))
    spec = importlib.util.spec_from_loader("update_chart_docs", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def render_files(values: dict) -> dict[str, str]:
    with helm_python.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def render(values: dict) -> dict[str, dict]:
    """Renders the chart; returns its objects keyed by `Kind/name`."""
    objects = {}
    for path, text in render_files(values).items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                key = f"{doc['kind']}/{doc['metadata']['name']}"
                assert key not in objects, f"{key} rendered twice"
                objects[key] = doc
    return objects


def notes(values: dict) -> str:
    return next(text for path, text in render_files(values).items() if path.endswith("NOTES.txt"))


def gateway_container(objects: dict) -> dict:
    containers = objects[f"Deployment/{FULLNAME}"]["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == "fanout"]
    return container


def config_toml(objects: dict) -> str:
    return objects[f"ConfigMap/{FULLNAME}"]["data"]["fanout.toml"]


def internal_enabled(values: dict) -> bool:
    return values.get("internal", {}).get("enabled", True)


@pytest.fixture(scope="module", params=sorted(MATRIX))
def case(request) -> tuple[str, dict, dict]:
    values = MATRIX[request.param]
    return request.param, values, render(values)


# --- Helm and Kubernetes ---------------------------------------------------------------------

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
    assert chart["kubeVersion"] == f">={KUBE_VERSIONS[0]}-0"


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


def validate_custom_resources(docs: list[dict]) -> list[str | None]:
    result = subprocess.run(["node", "validate_crds.mjs"], cwd=REPO / "tests" / "deploy",
                            input=json.dumps(docs), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_custom_resources_validate_against_their_crds():
    rendered = [(name, key, doc) for name in sorted(MATRIX) for key, doc in render(MATRIX[name]).items()
                if (doc["apiVersion"], doc["kind"]) in CRD_KINDS]
    kinds = {doc["kind"] for _, _, doc in rendered}
    assert kinds == {"ServiceMonitor", "PrometheusRule", "HTTPRoute"}, "the matrix renders every custom resource"
    errors = validate_custom_resources([doc for _, _, doc in rendered])
    bad = [f"{name}: {key}: {error}" for (name, key, _), error in zip(rendered, errors) if error]
    assert not bad, "\n".join(bad)
    # The validator does refuse what the CRDs refuse.
    route = copy.deepcopy(next(doc for _, _, doc in rendered if doc["kind"] == "HTTPRoute"))
    route["spec"]["rules"][0]["timeouts"]["request"] = "an hour"
    monitor = copy.deepcopy(next(doc for _, _, doc in rendered if doc["kind"] == "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert all(validate_custom_resources([route, monitor]))


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_two_renders_of_the_same_values_are_identical(name):
    """GitOps: Argo CD and Flux render on every sync; nothing may change between renders."""
    first, second = render_files(MATRIX[name]), render_files(MATRIX[name])
    assert first == second


def test_no_template_looks_up_the_cluster_or_makes_random_values():
    """`lookup` is empty offline (helm template, Argo CD), so a render could not repeat an
    online one; random and time functions differ on every render."""
    forbidden = re.compile(r"\b(lookup|randAlphaNum|randAlpha|randNumeric|randAscii|randBytes|uuidv4|now|"
                           r"genPrivateKey|genCA|genSelfSignedCert|genSignedCert)\b")
    for path in (CHART / "templates").rglob("*"):
        if path.is_file():
            found = forbidden.findall(path.read_text())
            assert not found, f"{path.relative_to(REPO)} uses {found}"


def test_pods_are_locked_down(case):
    _, _, objects = case
    for key, doc in objects.items():
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            containers = [c for c in pod["containers"] if c["name"] in ("fanout", "redis")]
        elif doc["kind"] == "Pod":
            pod, containers = doc["spec"], doc["spec"]["containers"]
        else:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True, key
        assert pod["automountServiceAccountToken"] is False, key
        for container in containers:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, key
            assert sc["allowPrivilegeEscalation"] is False, key
            assert sc["capabilities"]["drop"] == ["ALL"], key
            assert container["resources"]["requests"], key


def test_gateway_ports_probes_config_and_secrets(case):
    name, values, objects = case
    deployment = objects[f"Deployment/{FULLNAME}"]
    pod = deployment["spec"]["template"]["spec"]
    container = gateway_container(objects)
    ops_port = "internal" if internal_enabled(values) else "http"
    ports = [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    if internal_enabled(values):
        ports.append({"name": "internal", "containerPort": 9090, "protocol": "TCP"})
    assert container["ports"] == ports
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": ops_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": ops_port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": ops_port}

    # The configuration file is mounted where the gateway is told to read it.
    config_arg = container["args"][container["args"].index("--config") + 1]
    (mount,) = [m for m in container["volumeMounts"] if config_arg.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert mount["readOnly"] is True
    assert volume["configMap"]["name"] == FULLNAME
    assert Path(config_arg).name in objects[f"ConfigMap/{FULLNAME}"]["data"]
    toml = config_toml(objects)
    assert 'listen = "0.0.0.0:8080"' in toml
    assert ('internal_listen = "0.0.0.0:9090"' in toml) == internal_enabled(values)

    # Secrets come from a Secret, never from the ConfigMap.
    env = {e["name"]: e for e in container.get("env", [])}
    secret_name = values.get("secrets", {}).get("existingSecret") or FULLNAME
    if values.get("auth", {}).get("jwtPublicKey"):
        assert "FANOUT_JWT_SECRET" not in env
        assert 'jwt_public_key = "/etc/fanout/jwt-public-key.pem"' in toml
        assert "jwt-public-key.pem" in objects[f"ConfigMap/{FULLNAME}"]["data"]
    else:
        assert env["FANOUT_JWT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == secret_name
    if "FANOUT_API_KEY" in env:
        assert env["FANOUT_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True
    for word in ("jwt_secret", "api_key", REDIS_PASSWORD, JWT_SECRET):
        assert word not in toml
    if values.get("secrets", {}).get("existingSecret"):
        assert not any(k.startswith("Secret/") for k in objects), "existingSecret: the chart creates no Secret"


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


def test_replicas_spread_and_disruptions_bounded_even_while_unready(case):
    _, _, objects = case
    deployment = objects[f"Deployment/{FULLNAME}"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}
    assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)
    pdb = objects[f"PodDisruptionBudget/{FULLNAME}"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] == 1
    # Every gateway is unready while Redis is down: node drains must still evict them.
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_services_split_clients_from_operations(case):
    """The client Service reaches only the client port; the internal one only the internal
    port; the ServiceMonitor selects exactly the Service of the operations endpoints."""
    _, values, objects = case
    selector = objects[f"Deployment/{FULLNAME}"]["spec"]["selector"]["matchLabels"]
    services = {k.split("/", 1)[1]: v for k, v in objects.items()
                if v["kind"] == "Service" and v["spec"]["selector"] == selector}
    public = services.pop(FULLNAME)
    assert public["spec"]["sessionAffinity"] == "None"
    assert [(p["name"], p["targetPort"]) for p in public["spec"]["ports"]] == [("http", "http")]
    if internal_enabled(values):
        internal = services.pop(INTERNAL)
        assert internal["spec"]["type"] == "ClusterIP"
        assert [(p["name"], p["targetPort"], p["port"]) for p in internal["spec"]["ports"]] == [
            ("internal", "internal", 9090)]
    assert not services, f"unexpected gateway Services: {sorted(services)}"
    monitor = objects.get(f"ServiceMonitor/{FULLNAME}")
    if monitor:
        wanted = monitor["spec"]["selector"]["matchLabels"]
        scraped = [v for v in objects.values() if v["kind"] == "Service"
                   and wanted.items() <= v["metadata"]["labels"].items()]
        assert [s["metadata"]["name"] for s in scraped] == [INTERNAL if internal_enabled(values) else FULLNAME]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in [p["name"] for p in scraped[0]["spec"]["ports"]]


def test_hpa_scales_on_cpu_and_connections_with_behavior_from_values():
    objects = render(MATRIX["hpa"])
    assert "replicas" not in objects[f"Deployment/{FULLNAME}"]["spec"], "the HPA owns the replica count"
    hpa = objects[f"HorizontalPodAutoscaler/{FULLNAME}"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    assert by_type["Pods"]["pods"]["metric"]["name"] == "fanout_connections"
    assert by_type["Pods"]["pods"]["target"] == {"type": "AverageValue", "averageValue": "20000"}
    # The values' behavior merges over the default slow scale-down.
    assert hpa["spec"]["behavior"]["scaleUp"] == {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert 'redis_url = "rediss://redis.example.internal:6380/0"' in config_toml(objects)
    assert "HorizontalPodAutoscaler/" + FULLNAME not in render(KEY)


def test_redis_cluster_with_three_replicas_an_hpa_and_a_password_from_a_secret():
    objects = render(MATRIX["redis_cluster_hpa"])
    assert f"HorizontalPodAutoscaler/{FULLNAME}" in objects
    toml = config_toml(objects)
    assert "redis_cluster_url" not in toml and "redis_url" not in toml, "with a password: environment only"
    env = gateway_container(objects)["env"]
    names = [e["name"] for e in env]
    assert names.index("REDIS_PASSWORD") < names.index("FANOUT_REDIS_CLUSTER_URL"), "defined before use"
    by_name = {e["name"]: e for e in env}
    assert by_name["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-cluster", "key": "redis-password"}
    assert by_name["FANOUT_REDIS_CLUSTER_URL"]["value"] == ",".join(
        s.replace("redis://", "redis://:$(REDIS_PASSWORD)@") for s in CLUSTER_SEEDS)
    assert REDIS_PASSWORD not in json.dumps(objects)
    # Without a password the seeds are a plain setting.
    plain = render({**KEY, "replicaCount": 3, "redis": {"cluster": {"seeds": CLUSTER_SEEDS}}})
    assert "redis_cluster_url = [" + ", ".join(f'"{s}"' for s in CLUSTER_SEEDS) + "]" in config_toml(plain)
    # An ACL user goes in front of the password.
    user = render({**KEY, "redis": {"url": "redis://r:6379/0", "auth": {"existingSecret": "s", "username": "fanout"}}})
    url = {e["name"]: e for e in gateway_container(user)["env"]}["FANOUT_REDIS_URL"]["value"]
    assert url == "redis://fanout:$(REDIS_PASSWORD)@r:6379/0"


def test_redis_tls_files_come_from_the_secret_read_only():
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
    assert "redis-tls" not in json.dumps(render({**KEY, **EXTERNAL_REDIS})), "no TLS volume unless asked"


def test_ingress_routes_only_the_client_paths_and_is_websocket_friendly():
    objects = render(MATRIX["ingress"])
    ingress = objects[f"Ingress/{FULLNAME}"]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    # Its access log would record query strings, where older clients carry their token.
    assert annotations["nginx.ingress.kubernetes.io/enable-access-log"] == "false"
    logged = render({**MATRIX["ingress"], "ingress": {**MATRIX["ingress"]["ingress"], "accessLog": True}})
    assert "nginx.ingress.kubernetes.io/enable-access-log" not in \
        logged[f"Ingress/{FULLNAME}"]["metadata"]["annotations"]
    assert not any("affinity" in k or "upstream-hash-by" in k for k in annotations)
    (rule,) = ingress["spec"]["rules"]
    paths = rule["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [(p, "Exact") for p in CLIENT_PATHS]
    assert all(p["backend"]["service"] == {"name": FULLNAME, "port": {"name": "http"}} for p in paths)
    assert ingress["spec"]["tls"][0]["secretName"] == "rt-tls"
    assert "wss://rt.example.com/ws" in notes(MATRIX["ingress"])
    # With one port and ingress.api, /api is routed too (and still nothing else).
    single = render(MATRIX["single_port"])[f"Ingress/{FULLNAME}"]["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in single] == [(p, "Exact") for p in CLIENT_PATHS] + [("/api", "Prefix")]


def test_http_route_routes_only_the_client_paths_without_a_timeout():
    objects = render(MATRIX["gateway_api"])
    route = objects[f"HTTPRoute/{FULLNAME}"]["spec"]
    assert route["parentRefs"] == [{"name": "public", "namespace": "gateways", "sectionName": "https"}]
    assert route["hostnames"] == ["rt.example.com"]
    clients, api = route["rules"]
    assert [(m["path"]["type"], m["path"]["value"]) for m in clients["matches"]] == \
        [("Exact", p) for p in CLIENT_PATHS] + [("PathPrefix", "/demo")]
    assert clients["timeouts"] == {"request": "0s", "backendRequest": "0s"}
    assert clients["backendRefs"] == [{"name": FULLNAME, "port": 80}]
    assert [(m["path"]["type"], m["path"]["value"]) for m in api["matches"]] == [("PathPrefix", "/api")]
    assert "timeouts" not in api, "the API keeps the Gateway's own timeouts"
    assert 'api_on_public = true' in config_toml(objects)
    assert "HTTPRoute/" + FULLNAME not in render(KEY)
    plain = render({**KEY, "httpRoute": {"enabled": True, "parentRefs": [{"name": "gw"}]}})
    (rule,) = plain[f"HTTPRoute/{FULLNAME}"]["spec"]["rules"]
    assert [m["path"]["value"] for m in rule["matches"]] == CLIENT_PATHS


def test_bundled_redis_is_reachable_only_by_the_gateways():
    objects = render(MATRIX["bundled_redis"])
    redis_name = f"{FULLNAME}-redis"
    redis = objects[f"Deployment/{redis_name}"]["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][:4] == ["redis-server", "--save", "", "--appendonly"]
    assert objects[f"Service/{redis_name}"]["spec"]["ports"][0]["port"] == 6379
    assert f'redis_url = "redis://{redis_name}:6379/0"' in config_toml(objects)
    gateway_selector = objects[f"Service/{FULLNAME}"]["spec"]["selector"]
    redis_labels = objects[f"Deployment/{redis_name}"]["spec"]["template"]["metadata"]["labels"]
    assert not gateway_selector.items() <= redis_labels.items()
    policy = objects[f"NetworkPolicy/{redis_name}"]["spec"]
    assert policy["podSelector"]["matchLabels"] == objects[f"Service/{redis_name}"]["spec"]["selector"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": gateway_selector}}]
    assert not any(k.endswith("-redis") for k in render(KEY)), "no bundled Redis by default"


def test_extension_points_are_rendered():
    objects = render(MATRIX["extras"])
    pod = objects[f"Deployment/{FULLNAME}"]["spec"]["template"]["spec"]
    container = gateway_container(objects)
    assert container["image"] == "registry.example.com/realtime/fanout@sha256:" + "ab" * 32
    assert container["envFrom"] == [{"secretRef": {"name": "fanout-extra"}}]
    assert {"name": "RELEASE_NAME", "value": RELEASE} in container["env"], "extraEnv is templated"
    assert [c["name"] for c in pod["initContainers"]] == ["wait"]
    assert [c["name"] for c in pod["containers"]] == ["fanout", "sidecar"]
    assert objects["ConfigMap/rt-extra"]["data"] == {"release": RELEASE}
    assert objects["ConfigMap/rt-extra-text"]["data"] == {"a": "b"}
    template = objects[f"Deployment/{FULLNAME}"]["spec"]["template"]
    assert template["metadata"]["annotations"]["reloader.stakater.com/auto"] == "true"
    assert container["startupProbe"]["failureThreshold"] == 120
    test_pod = objects[f"Pod/{FULLNAME}-test"]["spec"]["containers"][0]
    assert test_pod["image"] == container["image"], "helm test runs the gateway's image"
    default = gateway_container(render(KEY))["image"]
    assert default == "fanout:" + yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    tagged = render({**KEY, "image": {"registry": "r.example.com/", "repository": "fanout", "tag": "1.2.3"}})
    assert gateway_container(tagged)["image"] == "r.example.com/fanout:1.2.3"


# --- GitOps: what rolls the pods ----------------------------------------------------------

def pod_annotations(values: dict) -> dict:
    return render(values)[f"Deployment/{FULLNAME}"]["spec"]["template"]["metadata"]["annotations"]


def test_pods_roll_when_the_configuration_or_the_charts_secret_changes():
    base = pod_annotations(KEY)
    other_key = pod_annotations({"secrets": {"jwtSecret": JWT_SECRET + "-rotated"}})
    with_api_key = pod_annotations({"secrets": {"jwtSecret": JWT_SECRET, "apiKeys": ["k"]}})
    other_config = pod_annotations({**KEY, "config": {"drain_s": 11}})
    assert base["checksum/secret"] != other_key["checksum/secret"]
    assert base["checksum/secret"] != with_api_key["checksum/secret"]
    assert base["checksum/config"] == other_key["checksum/config"]
    assert base["checksum/config"] != other_config["checksum/config"]
    assert base["checksum/secret"] == other_config["checksum/secret"]
    # A Secret the chart does not own is not read at render time: no checksum of it.
    existing = pod_annotations(MATRIX["existing_secret"])
    assert "checksum/secret" not in existing and "checksum/config" in existing
    assert "checksum/secret" not in pod_annotations(MATRIX["public_key"])


# --- alert rules -----------------------------------------------------------------------------

RULES = CHART / "files" / "alerts.yml"
DEFAULT_RUNBOOK = "https://github.com/fanout-gateway/fanout/blob/main/docs/operations.md"


def rule_groups(values: dict) -> list[dict]:
    return render(values)[f"PrometheusRule/{FULLNAME}"]["spec"]["groups"]


def test_plain_prometheus_loads_the_same_file_the_chart_renders():
    link = REPO / "deploy" / "prometheus" / "alerts.yml"
    assert link.is_symlink() and link.resolve() == RULES.resolve()


def test_prometheus_rule_is_the_rule_file_with_this_releases_job_runbook_and_limit(tmp_path):
    groups = rule_groups(MATRIX["monitoring"])
    source = RULES.read_text()
    expected = (source.replace(DEFAULT_RUNBOOK, "https://runbooks.example.com/fanout/operations.md")
                .replace('job=~".*fanout.*"', f'job="{INTERNAL}", namespace="{NAMESPACE}"')
                .replace("0.85 * 3221225472", f"0.85 * {1536 * 1024 * 1024}"))
    assert groups == yaml.safe_load(expected)["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"]}
    for name, rule in alerts.items():
        assert rule["annotations"]["runbook_url"] == f"https://runbooks.example.com/fanout/operations.md#{name.lower()}"
    assert alerts["FanoutMemoryHigh"]["expr"].endswith(f"> 0.85 * {1536 * 1024 * 1024}")
    # The job Prometheus gives the scraped Service's targets is the one the rules select.
    jobs = set(re.findall(r'job="([^"]+)"', json.dumps(groups).replace('\\"', '"')))
    assert jobs == {INTERNAL}
    # promtool accepts what the operator would load.
    path = tmp_path / "rendered-rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_memory_alert_follows_the_limit_and_needs_one():
    def threshold(values):
        (rule,) = [r for g in rule_groups(values) for r in g["rules"] if r["alert"] == "FanoutMemoryHigh"]
        return int(rule["expr"].rsplit("*", 1)[1])
    on = {**KEY, "prometheusRule": {"enabled": True}}
    assert threshold(on) == 3 * 1024 ** 3, "the default limit, 3Gi"
    for limit, expected in [("2Gi", 2 * 1024 ** 3), ("1.5G", 1_500_000_000), ("800000000", 800_000_000),
                            ("512Mi", 512 * 1024 ** 2)]:
        assert threshold({**on, "resources": {"limits": {"memory": limit}}}) == expected, limit
    no_limit = rule_groups({**on, "resources": {"limits": {"memory": None}}})
    assert "FanoutMemoryHigh" not in json.dumps(no_limit)
    assert len([r for g in no_limit for r in g["rules"]]) == len(
        [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]) - 1
    assert "PrometheusRule/" + FULLNAME not in render(KEY)
    with pytest.raises(helm_python.HelmError, match="resources.limits.memory"):
        render({**on, "resources": {"limits": {"memory": "lots"}}})


# --- the values schema and the README ------------------------------------------------------

def test_config_schema_is_generated_from_the_gateways_settings(fanout_bin):
    docs = chart_docs()
    wanted = docs.schema_text(docs.gateway_schema(str(fanout_bin)))
    assert (CHART / "values.schema.json").read_text() == wanted, \
        "values.schema.json's config differs from the gateway's settings: run scripts/update-chart-docs"
    gateway = docs.gateway_schema(str(fanout_bin))["properties"]
    config = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]
    assert config["additionalProperties"] is False
    assert config["properties"].keys() == gateway.keys()
    for key, schema in config["properties"].items():
        assert schema == (False if key in docs.CHART_OWNED else gateway[key]), key


def test_readme_values_table_is_generated_from_values_yaml():
    docs = chart_docs()
    assert (CHART / "README.md").read_text() == docs.readme_text(), \
        "helm/fanout/README.md's values table differs from values.yaml: run scripts/update-chart-docs"
    rows = docs.values_rows(yaml.safe_load((CHART / "values.yaml").read_text()),
                            docs.key_comments((CHART / "values.yaml").read_text()))
    undocumented = [key for key, _, _, description in rows if not description]
    assert not undocumented, f"values without a comment in values.yaml: {undocumented}"


def test_values_table_generator_reads_comments_keys_and_defaults():
    docs = chart_docs()
    table = docs.values_table(
        "# top\n\n# Count of things.\ncount: 3\nimage:\n  # Its tag.\n  tag: \"\"\n"
        "  # not above a key\n\n  pull: Always\n# A map.\nres:\n  a: {b: 1}\n")
    assert table.splitlines()[2:] == [
        "| `count` | int | `3` | Count of things. |",
        '| `image.tag` | string | `""` | Its tag. |',
        '| `image.pull` | string | `"Always"` |  |',
        '| `res` | object | `{"a": {"b": 1}}` | A map. |',
    ]


@pytest.mark.parametrize("values, complaint", [
    ({"replicaCount": "three"}, "replicaCount"),
    ({"config": {"jwt_secret": "x" * 40}}, "jwt_secret"),
    ({"config": {"redis_cluster_url": ["redis://a:1"]}}, "redis_cluster_url"),
    ({"config": {"internal_listen": "0.0.0.0:9999"}}, "internal_listen"),
    ({"config": {"drain_sec": 5}}, "drain_sec"),
    ({"config": {"max_connections": -1}}, "max_connections"),
    ({"config": {"heartbeat_s": "25"}}, "heartbeat_s"),
    ({"config": {"allowed_origins": "https://app.example.com"}}, "allowed_origins"),
    ({"config": {"namespaces": {"room": {"histroy_size": 5}}}}, "histroy_size"),
    ({"secrets": {"jwtSecret": "too-short"}}, "jwtSecret"),
    ({"redis": {"url": "http://redis:6379"}}, "url"),
    ({"redis": {"url": "redis://:password@redis:6379"}}, "url"),
    ({"redis": {"cluster": {"seeds": ["redis://:pw@a:6379"]}}}, "seeds"),
    ({"ingress": {"enabled": "yes"}}, "enabled"),
    ({"ingress": {"hosts": [{"host": "a", "paths": [{"path": "/", "pathType": "Prefix"}]}]}}, "paths"),
    ({"ingress": {"enabled": True, "hosts": []}}, "hosts"),
    ({"image": {"repository": "fanout", "digest": "latest"}}, "digest"),
    ({"httpRoute": {"timeouts": {"request": "an hour"}}}, "request"),
    ({"podDisruptionBudget": {"unhealthyPodEvictionPolicy": "Never"}}, "unhealthyPodEvictionPolicy"),
])
def test_schema_rejects_bad_values(values, complaint):
    with pytest.raises(helm_python.HelmError) as error:
        render({**KEY, **values})
    assert complaint in str(error.value)


def test_schema_accepts_every_setting_the_chart_does_not_own():
    """The settings once missing from the hand-written schema render now."""
    config = {"demo": True, "idempotency_window_s": 600, "trusted_proxies": ["10.0.0.1"], "write_delay_ms": 5,
              "jwt_algorithm": "HS512", "redis_prefix": "app:", "node_id": "a"}
    assert "idempotency_window_s = 600" in config_toml(render({**KEY, "config": config}))


@pytest.mark.parametrize("values, complaint", [
    ({}, "tokens need a key"),
    ({**KEY, "replicaCount": 3}, "shared Redis"),
    ({**KEY, "autoscaling": {"enabled": True}}, "shared Redis"),
    ({**KEY, "terminationGracePeriodSeconds": 12}, "must exceed"),
    ({"secrets": {"existingSecret": "s", "apiKeys": ["k"]}}, "existingSecret"),
    ({**KEY, "auth": {"jwtPublicKey": "pem"}}, "exclude each other"),
    ({**KEY, "redis": {"url": "redis://r:6379", "cluster": {"seeds": CLUSTER_SEEDS}}}, "choose one Redis"),
    ({"secrets": {"existingSecret": "s", "redisUrlKey": "u", "redisClusterUrlKey": "c"}}, "choose one Redis"),
    ({**KEY, "redis": {"auth": {"existingSecret": "s"}}}, "redis.auth"),
    ({**KEY, "redis": {"url": "redis://r:6379", "auth": {"username": "u"}}}, "redis.auth.username"),
    ({**KEY, "redis": {"cluster": {"seeds": ["redis://a:1", "rediss://b:1"]}}}, "all seeds"),
    ({**KEY, "redis": {"url": "redis://r:6379", "tls": {"existingSecret": "t"}}}, "needs a rediss://"),
    ({**KEY, "redis": {"cluster": {"seeds": CLUSTER_SEEDS}, "tls": {"existingSecret": "t"}}}, "needs rediss://"),
    ({**KEY, "redis": {"bundled": {"enabled": True}, "tls": {"existingSecret": "t"}}}, "bundled Redis has no TLS"),
    ({**KEY, **EXTERNAL_REDIS, "redis": {**EXTERNAL_REDIS["redis"], "tls": {"existingSecret": "t", "certKey": "c"}}},
     "go together"),
    ({**KEY, **EXTERNAL_REDIS, "redis": {**EXTERNAL_REDIS["redis"], "tls": {"certKey": "c", "keyKey": "k"}}},
     "set it"),
    ({**KEY, "ingress": {"enabled": True, "api": True}}, "apiOnPublic"),
    ({**KEY, "httpRoute": {"enabled": True, "parentRefs": [{"name": "gw"}], "api": True}}, "apiOnPublic"),
    ({**KEY, "httpRoute": {"enabled": True}}, "parentRefs"),
    ({**KEY, "internal": {"port": 8080}}, "must differ"),
    ({**KEY, **EXTERNAL_REDIS, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}, "minReplicas"),
])
def test_chart_refuses_unsafe_combinations(values, complaint):
    with pytest.raises(helm_python.HelmError) as error:
        render(values)
    assert complaint in str(error.value)


# --- the rendered configuration on the real gateway ----------------------------------------

@pytest.fixture(scope="module")
def redis_tls_files(tmp_path_factory) -> Path:
    """What the redis-tls Secret would hold: a CA, and a client certificate it signed (made
    with openssl), as the files the pod mounts."""
    tmp = tmp_path_factory.mktemp("redis-tls")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", "-new", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=chart test CA")
    openssl("req", "-new", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=fanout")
    (tmp / "tls.ext").write_text("extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "tls.crt", "-days", "1", "-extfile", "tls.ext")
    return tmp


def expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of an env value: defined variables only; $$ escapes."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), value)


def container_environment(objects: dict, container: dict) -> dict[str, str]:
    """The container's environment as the kubelet would set it: envFrom and secretKeyRefs
    resolved from the chart's Secret or the cluster's (EXTERNAL_SECRETS), values expanded."""
    secrets = {name: dict(data) for name, data in EXTERNAL_SECRETS.items()}
    for key, doc in objects.items():
        if doc["kind"] == "Secret":
            secrets[doc["metadata"]["name"]] = {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= secrets[source["secretRef"]["name"]]
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            env[item["name"]] = expand(item["value"], env)
        elif ref["key"] in secrets.get(ref["name"], {}):
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            assert ref.get("optional"), f"{item['name']}: key {ref['key']} missing from Secret {ref['name']}"
    return env


def mounted_config(objects: dict, tmp_path: Path, tls_files: Path) -> Path:
    """The ConfigMap's files as the pod sees them, in tmp_path instead of /etc/fanout, and
    the redis-tls Secret's files where its volume is mounted; returns the config file."""
    for file_name, content in objects[f"ConfigMap/{FULLNAME}"]["data"].items():
        content = content.replace("/etc/fanout/", f"{tmp_path}/").replace("/etc/fanout-redis-tls/", f"{tls_files}/")
        (tmp_path / file_name).write_text(content)
    return tmp_path / "fanout.toml"


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_every_rendered_configuration_passes_check_config(name, fanout_bin, tmp_path, redis_tls_files):
    objects = render(MATRIX[name])
    config_file = mounted_config(objects, tmp_path, redis_tls_files)
    settings = container_environment(objects, gateway_container(objects))
    check = subprocess.run([fanout_bin, "check-config", "--config", config_file],
                           env=clean_environment() | settings, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    for secret in (REDIS_PASSWORD, JWT_SECRET, EXTERNAL_SECRETS["fanout-keys"]["jwt-secret"]):
        assert secret not in check.stdout + check.stderr
    summary = check.stdout
    if name.startswith("redis_cluster"):
        assert "broker                     redis-cluster, 3 seed nodes" in summary, summary
    if name == "redis_cluster_tls_existing_secret":
        assert f"TLS, server certificate checked against {redis_tls_files}/ca.crt" in summary
    if name == "redis_tls":
        assert f"client certificate {redis_tls_files}/tls.crt" in summary
    if name == "extras":
        assert settings["FANOUT_LOG_LEVEL"] == "debug", "envFrom reaches the gateway"
    if internal_enabled(MATRIX[name]):
        assert "internal_listen            0.0.0.0:9090" in summary, summary


def helm_test_script(objects: dict) -> tuple[list[str], dict[str, str]]:
    (container,) = objects[f"Pod/{FULLNAME}-test"]["spec"]["containers"]
    return container["command"], {e["name"]: e["value"] for e in container["env"]}


def test_helm_test_pod_checks_the_services_the_release_creates():
    for name in ("minimal", "single_port"):
        objects = render(MATRIX[name])
        pod = objects[f"Pod/{FULLNAME}-test"]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        _, env = helm_test_script(objects)
        ops = INTERNAL if internal_enabled(MATRIX[name]) else FULLNAME
        ops_port = 9090 if internal_enabled(MATRIX[name]) else 80
        assert env["READY_URL"] == f"http://{ops}.{NAMESPACE}.svc:{ops_port}/readyz"
        assert env["WS_URL"] == f"http://{FULLNAME}.{NAMESPACE}.svc:80/ws"
        assert f"Service/{ops}" in objects
    assert "Pod/rt-fanout-test" not in render({**KEY, "tests": {"enabled": False}})


def run_helm_test(objects: dict, ready_url: str, ws_url: str) -> subprocess.CompletedProcess:
    """The test pod's own command, with its Service URLs pointed at a local gateway."""
    command, env = helm_test_script(objects)
    env |= {"READY_URL": ready_url, "WS_URL": ws_url}
    return subprocess.run(command, env=clean_environment() | env, capture_output=True, text=True, timeout=60)


def post(url: str, body: dict, key: str | None) -> int:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("name", ["minimal", "public_key", "namespaces_and_api_keys", "gateway_api", "single_port"])
def test_rendered_config_runs_on_the_gateway(name, fanout_bin, tmp_path, redis_tls_files):
    """The rendered files and environment on the real gateway (its listeners on loopback: the
    flags beat the file): the probes answer on the ports they name, the ServiceMonitor's path
    on its port, the API only where the Services put it, every routed path on the client
    port, and the `helm test` script passes."""
    values = MATRIX[name]
    objects = render(values)
    container = gateway_container(objects)
    assert container["args"] == ["serve", "--config", "/etc/fanout/fanout.toml"]
    config_file = mounted_config(objects, tmp_path, redis_tls_files)
    settings = container_environment(objects, container)
    start = gateway_with_internal if internal_enabled(values) else gateway
    with start(fanout_bin, tmp_path, "--config", str(config_file), settings=settings) as urls:
        public, internal = urls if isinstance(urls, tuple) else (urls, urls)
        by_port = {"http": public, "internal": internal}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert http_get(by_port[get["port"]] + get["path"])[0] == 200, probe
        monitor = objects.get(f"ServiceMonitor/{FULLNAME}")
        if monitor:
            (endpoint,) = monitor["spec"]["endpoints"]
            status, text = http_get(by_port[endpoint["port"]] + endpoint["path"])
            assert status == 200 and "fanout_connections_open" in text

        message = {"channel": "room:lobby", "data": {"type": "ping"}}
        api_keys = values.get("secrets", {}).get("apiKeys")
        key = api_keys[0] if api_keys else "no-such-key"
        assert post(f"{internal}/api/publish", message, key) == (200 if api_keys else 403)
        on_public = not internal_enabled(values) or values.get("internal", {}).get("apiOnPublic")
        assert (post(f"{public}/api/publish", message, key) != 404) == bool(on_public)
        if internal_enabled(values):
            for path in ("/metrics", "/readyz", "/healthz"):
                assert http_get(public + path)[0] == 404, f"{path} on the client port"

        # Every path the Ingress or HTTPRoute routes exists on the client port.
        routed = []
        for doc in objects.values():
            if doc["kind"] == "Ingress":
                routed += [p["path"] for r in doc["spec"]["rules"] for p in r["http"]["paths"]]
            if doc["kind"] == "HTTPRoute":
                routed += [m["path"]["value"] for r in doc["spec"]["rules"] for m in r["matches"]]
        for path in routed:
            probe_path = {"/api": "/api/history?channel=dag:1", "/demo": "/demo/"}.get(path, path)
            assert http_get(public + probe_path)[0] != 404, f"{path} is routed but not served"

        result = run_helm_test(objects, f"{internal}/readyz", f"{public}/ws")
        assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
        # The same script fails where no WebSocket is served.
        if internal_enabled(values):
            refused = run_helm_test(objects, f"{internal}/readyz", f"{internal}/ws")
            assert refused.returncode == 1 and "FAIL: no 101" in refused.stdout, refused.stdout
