"""The Tributary chart, linted and rendered by a real Helm engine (Helm 4 as a library), no cluster.

Run: charts/tributary/tests/run.sh
"""

from __future__ import annotations

import pytest
import yaml

import helm_python as helm

from conftest import CHART_DIR, NAMESPACE, RELEASE, REPO_DIR, VALUES_DIR, values_file

KUBE_VERSION = "v1.33.0"
CRD_FILE = "streamingingestions.tributary.dev.yaml"
DEFAULT_OPERATOR_IMAGE = "ghcr.io/tributary-dev/tributary-operator:0.1.0"
DEFAULT_WORKER_IMAGE = "ghcr.io/tributary-dev/tributary-worker:0.1.0"

# Everything the operator may do on the resources it reconciles, as (apiGroup, resource, verb).
RW = ("get", "list", "watch", "create", "patch", "update", "delete")
OPERATOR_PERMISSIONS = frozenset(
    [("tributary.dev", "streamingingestions", v) for v in ("get", "list", "watch")]
    + [("tributary.dev", "streamingingestions/status", v) for v in ("get", "patch", "update")]
    + [("apps", "deployments", v) for v in RW]
    + [("batch", r, v) for r in ("jobs", "cronjobs") for v in RW]
    + [("", r, v) for r in ("configmaps", "serviceaccounts", "persistentvolumeclaims") for v in RW]
    + [("rbac.authorization.k8s.io", r, v) for r in ("roles", "rolebindings") for v in RW]
    + [("policy", "poddisruptionbudgets", v) for v in ("get", "create", "patch", "update", "delete")]
    + [("", "pods", v) for v in ("get", "list", "watch")]
    + [("", "secrets", "get")]
    + [(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")]
)
LEASE_PERMISSIONS = frozenset(("coordination.k8s.io", "leases", v) for v in ("get", "create", "update", "patch"))
# The Role the operator creates for each ingestion's workers: it must hold these verbs itself,
# or the API server refuses to create that Role (RBAC escalation prevention).
WORKER_ROLE_PERMISSIONS = frozenset(
    [("tributary.dev", "streamingingestions", "get")]
    + [("tributary.dev", "streamingingestions/status", v) for v in ("get", "patch")]
)

VALID_VALUES = ["watch-namespaces.yaml", "service-monitor.yaml", "monitoring.yaml", "two-replicas.yaml", "custom-images.yaml"]
INVALID_VALUES = {
    "invalid-replicas-string.yaml": "/replicas",
    "invalid-unknown-key.yaml": "watchNamespace",
    "invalid-nested-key.yaml": "enable",
    "invalid-pull-policy.yaml": "/worker/image/pullPolicy",
    "invalid-namespace-name.yaml": "/watchNamespaces/0",
}


def permissions(role: dict) -> set[tuple[str, str, str]]:
    """The (apiGroup, resource, verb) triples a Role or ClusterRole grants; refuses wildcards."""
    granted = set()
    for rule in role.get("rules") or []:
        assert "nonResourceURLs" not in rule, f"{role['metadata']['name']}: nonResourceURLs {rule}"
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: wildcard in {field}: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    return granted


def all_renders(render):
    yield "default", render()
    for name in VALID_VALUES:
        yield name, render(values_file(name))


# --- lint -------------------------------------------------------------------------------------


@pytest.mark.parametrize("values_name", [None, *VALID_VALUES])
def test_lint_strict_has_no_warnings_or_errors(values_name):
    values = values_file(values_name) if values_name else None
    report = helm.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE, kube_version=KUBE_VERSION)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def test_chart_metadata(chart):
    meta = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert meta["name"] == "tributary"
    assert meta["version"] == "0.1.0"
    assert str(meta["appVersion"]) == "0.1.0"


# --- CRD --------------------------------------------------------------------------------------


def test_crd_is_byte_identical_to_the_generated_manifest():
    source = REPO_DIR / "crds" / CRD_FILE
    in_chart = CHART_DIR / "crds" / CRD_FILE
    assert source.is_file(), f"{source} is missing (cargo run --bin crdgen)"
    assert in_chart.read_bytes() == source.read_bytes(), (
        f"{in_chart} differs from {source}: run `make crd` (copies the generated CRD into the chart)"
    )


def test_chart_ships_exactly_the_crd(chart):
    crds = chart.crds
    assert [c["name"] for c in crds] == [f"crds/{CRD_FILE}"]
    doc = yaml.safe_load(crds[0]["data"])
    assert doc["kind"] == "CustomResourceDefinition"
    assert doc["metadata"]["name"] == "streamingingestions.tributary.dev"
    assert doc["spec"]["group"] == "tributary.dev"
    assert "v1alpha1" in [v["name"] for v in doc["spec"]["versions"]]


def test_package_leaves_out_tests(chart):
    names = [f["name"] for f in chart.files]
    assert not [n for n in names if n.startswith("tests/")], names
    assert (CHART_DIR / "tests" / "test_chart.py").is_file()


# --- default values ---------------------------------------------------------------------------


def test_default_kinds(render):
    assert render().kinds() == sorted(["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"])


def test_every_object_is_named_and_namespaced_where_it_must_be(render):
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for label, rendered in all_renders(render):
        for obj in rendered.objects:
            assert obj["apiVersion"] and obj["metadata"].get("name"), (label, obj)
            if obj["kind"] in cluster_scoped:
                assert "namespace" not in obj["metadata"], (label, obj["kind"])
            else:
                assert obj["metadata"].get("namespace"), (label, obj["kind"], obj["metadata"]["name"])
            assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_default_deployment(render):
    rendered = render()
    deployment = rendered.deployment()
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == rendered.one("ServiceAccount")["metadata"]["name"]
    assert pod["metadata"]["labels"].items() >= deployment["spec"]["selector"]["matchLabels"].items()
    container = rendered.container()
    assert container["image"] == DEFAULT_OPERATOR_IMAGE
    assert container["args"] == ["run", "--worker-image", DEFAULT_WORKER_IMAGE]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["TRIBUTARY_WORKER_IMAGE_PULL_POLICY"]["value"] == "IfNotPresent"
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert container["resources"]["limits"]["memory"] == "256Mi"


def test_metrics_service_selects_the_operator(render):
    rendered = render()
    service = rendered.one("Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == rendered.deployment()["spec"]["selector"]["matchLabels"]


def test_notes_say_what_to_do_next(render):
    notes = render().notes
    assert "kubectl apply -f" in notes
    assert "kubectl get streams" in notes
    assert "kubectl wait --for=condition=Ready stream/" in notes
    assert f"deployment/{RELEASE}-operator" in notes


# --- security ---------------------------------------------------------------------------------


def test_restricted_security_context(render):
    for label, rendered in all_renders(render):
        pod = rendered.deployment()["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, label
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, label
        assert pod["securityContext"]["runAsUser"] != 0, label
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), label
        container = rendered.container()
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True, label
        assert sc["readOnlyRootFilesystem"] is True, label
        assert sc["allowPrivilegeEscalation"] is False, label
        assert sc["capabilities"] == {"drop": ["ALL"]}, label
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, label
        assert sc.get("privileged") is not True, label
        # A read-only root: /tmp is the one writable place.
        assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"], label


def test_rbac_is_no_wider_than_the_operator_needs(render):
    for label, rendered in all_renders(render):
        for role in rendered.of_kind("ClusterRole") + rendered.of_kind("Role"):
            granted = permissions(role)
            extra = granted - OPERATOR_PERMISSIONS - LEASE_PERMISSIONS
            assert not extra, f"{label}: {role['kind']} {role['metadata']['name']} grants more than needed: {sorted(extra)}"
            secrets = {verb for group, resource, verb in granted if (group, resource) == ("", "secrets")}
            assert secrets <= {"get"}, f"{label}: secrets {secrets}"
            for rule in role["rules"]:
                if "leases" in rule["resources"]:
                    assert role["kind"] == "Role" and role["metadata"]["namespace"] == NAMESPACE, label


def test_cluster_role_grants_what_the_operator_needs(render):
    role = render().one("ClusterRole")
    granted = permissions(role)
    assert granted == OPERATOR_PERMISSIONS, sorted(granted ^ OPERATOR_PERMISSIONS)
    # The operator can create each worker's Role only if it holds the same verbs.
    assert WORKER_ROLE_PERMISSIONS <= granted


def test_cluster_role_binding_binds_the_service_account(render):
    rendered = render()
    binding = rendered.one("ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": rendered.one("ClusterRole")["metadata"]["name"],
    }
    sa = rendered.one("ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": NAMESPACE}]


# --- watch namespaces -------------------------------------------------------------------------


def test_watch_namespaces_use_namespaced_roles(render):
    rendered = render(values_file("watch-namespaces.yaml"))
    assert rendered.of_kind("ClusterRole") == []
    assert rendered.of_kind("ClusterRoleBinding") == []
    roles = {r["metadata"]["namespace"]: r for r in rendered.of_kind("Role")}
    bindings = {b["metadata"]["namespace"]: b for b in rendered.of_kind("RoleBinding")}
    assert sorted(roles) == ["iot", "payments"]
    assert sorted(bindings) == ["iot", "payments"]
    sa = rendered.one("ServiceAccount")["metadata"]["name"]
    for namespace, role in roles.items():
        assert permissions(role) == OPERATOR_PERMISSIONS, namespace
        binding = bindings[namespace]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    assert rendered.container()["args"] == [
        "run", "--worker-image", DEFAULT_WORKER_IMAGE, "--watch-namespaces", "iot,payments",
    ]
    assert "iot, payments" in rendered.notes


# --- ServiceMonitor ---------------------------------------------------------------------------


def test_service_monitor_is_off_by_default(render):
    assert render().of_kind("ServiceMonitor") == []


def test_service_monitor_scrapes_the_metrics_service(render):
    rendered = render(values_file("service-monitor.yaml"))
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = rendered.one("Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}]
    assert "metrics" in [p["name"] for p in service["spec"]["ports"]]


# --- worker monitoring: PodMonitor and Grafana dashboard ---------------------------------------


def worker_metrics() -> set[str]:
    """The series names the worker exports, read from where it registers them (prometheus-client
    adds `_total` to counters and `_bucket`/`_sum`/`_count` to histograms)."""
    import re

    source = (REPO_DIR / "worker" / "src" / "outputs" / "metrics.rs").read_text()
    prefix = re.search(r'Registry::with_prefix\("([a-z_]+)"\)', source).group(1)
    names = re.findall(r'registry\.register\(\s*"([a-z_]+)"', source)
    assert len(names) >= 10, names
    series = set()
    for name in names:
        base = f"{prefix}_{name}"
        series |= {base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return series


def test_worker_monitoring_is_off_by_default(render):
    rendered = render()
    assert rendered.of_kind("PodMonitor") == []
    assert [c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")] == []


def test_pod_monitor_scrapes_every_worker_labelled_by_ingestion(render):
    rendered = render(values_file("monitoring.yaml"))
    monitor = rendered.one("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The workers run in the users' namespaces, labelled by the operator (resources::selector_labels).
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "tributary-worker"}}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("metrics", "/metrics", "15s")
    assert endpoint["relabelings"] == [
        {"sourceLabels": ["__meta_kubernetes_pod_label_tributary_dev_ingestion"], "targetLabel": "ingestion"}
    ]
    # With watched namespaces, only those.
    rendered = render({**values_file("monitoring.yaml"), **values_file("watch-namespaces.yaml")})
    expected = values_file("watch-namespaces.yaml")["watchNamespaces"]
    assert rendered.one("PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": expected}


def test_dashboard_queries_only_metrics_the_worker_exports(render):
    import json
    import re

    rendered = render(values_file("monitoring.yaml"))
    [config_map] = [c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["tributary-workers.json"])
    assert dashboard["uid"] == "tributary-workers"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    exported = worker_metrics()
    used = {m for e in exprs for m in re.findall(r"\b(tributary_[a-z_]+)", e)}
    assert used, exprs
    assert used <= exported, used - exported
    # The panels the issue asks for: lag, rows/s, batch duration, bad records, compactions.
    for metric in (
        "tributary_worker_offsets_behind_latest",
        "tributary_worker_rows_written_total",
        "tributary_worker_batch_duration_seconds_bucket",
        "tributary_worker_rescued_rows_total",
        "tributary_worker_dead_letter_rows_total",
        "tributary_worker_compactions_total",
    ):
        assert metric in used, metric
    # Every query is grouped by the label the PodMonitor adds.
    for expr in exprs:
        if not expr.startswith("label_values"):
            assert "ingestion" in expr, expr


# --- replicas and leader election -------------------------------------------------------------


def lease_role_check(rendered):
    role = next(r for r in rendered.of_kind("Role") if r["metadata"]["name"].endswith("-leader-election"))
    assert role["metadata"]["namespace"] == NAMESPACE
    assert permissions(role) == LEASE_PERMISSIONS
    binding = next(b for b in rendered.of_kind("RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"])
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["subjects"][0]["name"] == rendered.one("ServiceAccount")["metadata"]["name"]


def test_two_replicas_turn_leader_election_on(render):
    rendered = render(values_file("two-replicas.yaml"))
    deployment = rendered.deployment()
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert rendered.container()["args"] == ["run", "--worker-image", DEFAULT_WORKER_IMAGE, "--leader-election"]
    lease_role_check(rendered)


def test_one_replica_has_no_leader_election_and_no_lease_access(render):
    rendered = render({"replicas": 1})
    assert "--leader-election" not in rendered.container()["args"]
    assert rendered.of_kind("Role") == [] and rendered.of_kind("RoleBinding") == []


def test_leader_election_can_be_asked_for_with_one_replica(render):
    rendered = render({"leaderElection": {"enabled": True}})
    assert rendered.deployment()["spec"]["replicas"] == 1
    assert rendered.container()["args"][-1] == "--leader-election"
    lease_role_check(rendered)


# --- values reach the objects -----------------------------------------------------------------


def test_custom_images_and_scheduling(render):
    rendered = render(values_file("custom-images.yaml"))
    container = rendered.container()
    assert container["image"] == "registry.example.com:5000/platform/tributary-operator:0.1.0-rc.1"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"][:3] == ["run", "--worker-image", "registry.example.com:5000/platform/tributary-worker:0.1.0-rc.1"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TRIBUTARY_WORKER_IMAGE_PULL_POLICY"] == "Never"
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": 1, "memory": "512Mi"}}
    pod = rendered.deployment()["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"example.com/team": "data-platform"}
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["spec"]["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["spec"]["affinity"]


def test_existing_service_account(render):
    rendered = render({"serviceAccount": {"create": False, "name": "platform-operator"}})
    assert rendered.of_kind("ServiceAccount") == []
    assert rendered.deployment()["spec"]["template"]["spec"]["serviceAccountName"] == "platform-operator"
    assert rendered.one("ClusterRoleBinding")["subjects"][0]["name"] == "platform-operator"


def test_existing_service_account_needs_a_name(render):
    with pytest.raises(helm.HelmError, match="serviceAccount.name is required"):
        render({"serviceAccount": {"create": False}})


def test_release_name_containing_the_chart_name(render):
    rendered = render(name="data-tributary", namespace="streaming")
    assert rendered.deployment()["metadata"]["name"] == "data-tributary-operator"
    assert rendered.deployment()["metadata"]["namespace"] == "streaming"
    assert rendered.one("ClusterRoleBinding")["subjects"][0]["namespace"] == "streaming"


# --- invalid values are refused ---------------------------------------------------------------


@pytest.mark.parametrize("values_name,expected", sorted(INVALID_VALUES.items()))
def test_invalid_values_are_refused(render, values_name, expected):
    assert (VALUES_DIR / values_name).is_file()
    with pytest.raises(helm.HelmValuesError) as refused:
        render(values_file(values_name))
    message = str(refused.value)
    assert "schema" in message and expected in message, message
    report = helm.lint(CHART_DIR, values_file(values_name), strict=True, kube_version=KUBE_VERSION)
    assert any(expected in error for error in report["errors"]), report


def test_every_values_file_is_tested():
    on_disk = {p.name for p in VALUES_DIR.glob("*.yaml")}
    assert on_disk == set(VALID_VALUES) | set(INVALID_VALUES)


# --- values and schema agree ------------------------------------------------------------------


def test_every_value_has_a_schema_entry_and_a_default():
    import json

    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) - {"global"} == set(defaults)
    # Objects the chart owns refuse unknown keys too.
    for key in ("worker", "leaderElection", "serviceAccount", "resources", "metrics", "serviceMonitor", "podMonitor", "dashboard"):
        assert schema["properties"][key]["additionalProperties"] is False, key
    assert schema["definitions"]["image"]["additionalProperties"] is False


def test_notes_match_the_crd_names():
    crd = yaml.safe_load((CHART_DIR / "crds" / CRD_FILE).read_text())
    names = crd["spec"]["names"]
    assert "streams" in names["categories"]  # kubectl get streams
    assert "stream" in names["shortNames"]  # kubectl wait ... stream/NAME, kubectl scale stream/NAME
    assert names["singular"] == "streamingingestion"  # kubectl explain streamingingestion.spec.source


def test_kind_suite_values_pass_the_schema(render):
    """e2e/kind/values.yaml (the real-cluster suite's values) plus the images run.sh sets."""
    values = yaml.safe_load((REPO_DIR / "e2e" / "kind" / "values.yaml").read_text())
    values["image"] = {"repository": "ghcr.io/tributary-dev/tributary-operator", "tag": "e2e"}
    values["worker"] = {"image": {"repository": "ghcr.io/tributary-dev/tributary-worker", "tag": "e2e", "pullPolicy": "IfNotPresent"}}
    rendered = render(values)
    assert rendered.container()["args"] == ["run", "--worker-image", "ghcr.io/tributary-dev/tributary-worker:e2e", "--leader-election"]
    lease_role_check(rendered)
