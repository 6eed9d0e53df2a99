"""The Helm chart (charts/neuron-operator), rendered offline with the real helm binary; no cluster needed.

helm comes from $HELM, PATH, or the test control plane's bin directory (hack/testenv-build.sh puts helm there;
`make test` and .ci/run build it first). A missing helm is a failure, not a skip: CI always has it.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "neuron-operator"
RELEASE = "nrn"
NAMESPACE = "neuron-system"
FULLNAME = f"{RELEASE}-neuron-operator"
SERVICE_ACCOUNT = {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}

# The application rules the operator needs (least privilege; see the operator's reconcile and observe modules).
APPLICATION_RULES = [
    (["inference.neuron-operator.io"], ["neuroninferenceservices"], ["get", "list", "watch"]),
    (["inference.neuron-operator.io"], ["neuroninferenceservices/status"], ["get", "patch", "update"]),
    (["apps"], ["deployments", "statefulsets"], ["get", "list", "watch", "create", "patch", "delete"]),
    (["batch"], ["jobs"], ["get", "list", "watch", "create", "patch", "delete"]),
    ([""], ["services"], ["get", "list", "watch", "create", "patch", "delete"]),
    ([""], ["pods"], ["get", "list", "watch", "delete"]),
    ([""], ["events"], ["create", "patch"]),
    (["policy"], ["poddisruptionbudgets"], ["get", "list", "watch", "create", "patch", "delete"]),
    (["autoscaling"], ["horizontalpodautoscalers"], ["list", "watch", "create", "patch", "delete"]),
    (["keda.sh"], ["scaledobjects"], ["list", "watch", "create", "patch", "delete"]),
]
# What kopf itself needs, cluster-wide in every mode (no peering rules: the operator runs --standalone).
KOPF_RULES = [
    (["apiextensions.k8s.io"], ["customresourcedefinitions"], ["get", "list", "watch"]),
    ([""], ["namespaces"], ["get", "list", "watch"]),
]
FORBIDDEN_RESOURCES = {"secrets", "nodes", "configmaps", "*"}


# --- helpers ------------------------------------------------------------------------------------------------


def _testenv_helms() -> list[pathlib.Path]:
    """helm binaries in the test control plane's bin directories (hack/testenv-build.sh), newest first.

    The script itself is not run here: on a cold cache it would start a long Go build of the control plane.
    """
    dirs = []
    if os.environ.get("TESTENV_BIN"):
        dirs.append(pathlib.Path(os.environ["TESTENV_BIN"]))
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    dirs += sorted((cache / "neuron-operator" / "testenv").glob("*/bin"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [d / "helm" for d in dirs if (d / "helm").is_file()]


@functools.lru_cache(maxsize=None)
def helm_binary() -> str:
    candidates = [os.environ.get("HELM"), shutil.which("helm"), *map(str, _testenv_helms())]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("helm not found: set $HELM, put helm on PATH, or run hack/testenv-build.sh (make testenv)")


def helm(*args: str, values: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run helm; ``values`` go in as a values file on stdin (JSON is YAML), so types stay exact (no --set coercion)."""
    argv = [helm_binary(), *args] + (["--values", "-"] if values else [])
    proc = subprocess.run(argv, input=json.dumps(values) if values else None, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@functools.lru_cache(maxsize=None)
def _render_cached(values_json: str) -> tuple:
    values = json.loads(values_json)
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def render(values: dict | None = None) -> list[dict]:
    """`helm template` with these values; the parsed documents (deep copies, safe to mutate)."""
    return json.loads(json.dumps(list(_render_cached(json.dumps(values or {}, sort_keys=True)))))


def render_error(values: dict) -> str:
    proc = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values, check=False)
    assert proc.returncode != 0, f"expected helm to reject {values}, it rendered:\n{proc.stdout[:2000]}"
    return proc.stderr


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def env_of(docs: list[dict]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(docs)["env"]}


def rules_of(role: dict) -> list[tuple]:
    return [(r["apiGroups"], r["resources"], r["verbs"]) for r in role["rules"]]


ALL_RENDERS = [
    {},
    {"watchNamespaces": ["team-a", "team-b"]},
    {"metrics": {"serviceMonitor": {"enabled": True}}},
    {"logging": {"level": "debug"}, "serviceAccount": {"create": False, "name": "existing"}},
]


# --- lint and schema ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_helm_lint_is_clean(strict: bool):
    proc = helm("lint", str(CHART), *(["--strict"] if strict else []))
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout
    assert "0 chart(s) failed" in proc.stdout


def test_helm_lint_strict_with_namespaces_and_service_monitor():
    values = {"watchNamespaces": ["team-a"], "metrics": {"serviceMonitor": {"enabled": True}}}
    proc = helm("lint", str(CHART), "--strict", "--namespace", NAMESPACE, values=values)
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "neuron-operator"
    assert chart["version"] == "0.1.0" and str(chart["appVersion"]) == "0.1.0"
    assert chart["kubeVersion"] == ">=1.30.0-0"


def test_kube_version_gate():
    helm("template", RELEASE, str(CHART), "--kube-version", "1.30.0")
    proc = helm("template", RELEASE, str(CHART), "--kube-version", "1.29.9", check=False)
    assert proc.returncode != 0 and "kubeVersion" in proc.stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"watchNamespaces": 5}, "/watchNamespaces"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"watchNamespace": ["a"]}, "watchNamespace"),  # typo of a top-level key
        ({"image": {"tag": 1.0}}, "/image/tag"),
        ({"image": {"pulPolicy": "Always"}}, "pulPolicy"),
        ({"logging": {"level": "trace"}}, "/logging/level"),
        ({"defaultArtifactStore": "nfs://server/export"}, "/defaultArtifactStore"),
        ({"compile": {"backoffLimit": -1}}, "/compile/backoffLimit"),
        ({"metrics": {"port": 0}}, "/metrics/port"),
        ({"metrics": {"serviceMonitor": {"enabled": "yes"}}}, "/metrics/serviceMonitor/enabled"),
        ({"metrics": {"podMonitor": {"enabled": "yes"}}}, "/metrics/podMonitor/enabled"),
        ({"metrics": {"podMonitor": {"interval": "often"}}}, "/metrics/podMonitor/interval"),
        ({"metrics": {"podMonitor": {"port": "http"}}}, "port"),
        ({"metrics": {"dashboards": {"labels": {"grafana_dashboard": 1}}}}, "/metrics/dashboards/labels"),
        ({"metrics": {"dashboards": {"labels": None}}}, "labels"),  # null deletes the key: the sidecar needs one
        ({"metrics": {"dashboards": {"namespace": "Monitoring"}}}, "/metrics/dashboards/namespace"),
        ({"podSecurityContext": {"runAsUser": "65532"}}, "/podSecurityContext/runAsUser"),
    ],
)
def test_schema_rejects_bad_values(values: dict, complaint: str):
    assert complaint in render_error(values)


def test_schema_is_draft07_and_closed_at_the_top():
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False


def _assert_schema_covers(values: dict, schema: dict, path: str) -> None:
    for key, value in values.items():
        assert key in schema.get("properties", {}), f"values.yaml key {path}{key} is not in values.schema.json"
        prop = schema["properties"][key]
        assert "type" in prop, f"{path}{key} has no type in values.schema.json"
        if isinstance(value, dict) and prop.get("properties"):
            _assert_schema_covers(value, prop, f"{path}{key}.")


def test_schema_types_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    _assert_schema_covers(values, schema, "")


def test_valid_store_values_render():
    for store in ("pvc://neuron-artifacts", "pvc://neuron-artifacts/llama", "s3://my-bucket/neuron/artifacts"):
        assert env_of(render({"defaultArtifactStore": store}))["NEURON_OPERATOR_DEFAULT_ARTIFACT_STORE"] == store


# --- CRDs ---------------------------------------------------------------------------------------------------


def test_chart_crd_is_identical_to_the_generated_one():
    generated = ROOT / "crds" / "neuroninferenceservices.yaml"
    copy = CHART / "crds" / "neuroninferenceservices.yaml"
    assert copy.is_file(), "charts/neuron-operator/crds/neuroninferenceservices.yaml is missing: run `make crds`"
    if copy.read_bytes() != generated.read_bytes():
        diff = difflib.unified_diff(generated.read_text(encoding="utf-8").splitlines(),
                                    copy.read_text(encoding="utf-8").splitlines(),
                                    "crds/neuroninferenceservices.yaml", str(copy.relative_to(ROOT)), lineterm="")
        pytest.fail("charts/neuron-operator/crds/ differs from crds/: run `make crds`\n" + "\n".join(list(diff)[:40]))


def test_chart_ships_only_the_crds():
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["neuroninferenceservices.yaml"]
    crd = yaml.safe_load((CHART / "crds" / "neuroninferenceservices.yaml").read_text(encoding="utf-8"))
    assert crd["metadata"]["name"] == "neuroninferenceservices.inference.neuron-operator.io"


def test_templates_do_not_render_crds():
    # Helm installs crds/ on first install only; the templates must not also manage the CRD (deleting a
    # release would then delete every service and, through owner references, every model server).
    assert not of_kind(render(), "CustomResourceDefinition")


# --- what gets rendered -------------------------------------------------------------------------------------


def test_default_render():
    docs = render()
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted([
        ("ServiceAccount", FULLNAME),
        ("ClusterRole", f"{FULLNAME}-kopf"),
        ("ClusterRoleBinding", f"{FULLNAME}-kopf"),
        ("ClusterRole", FULLNAME),
        ("ClusterRoleBinding", FULLNAME),
        ("Deployment", FULLNAME),
        ("Service", f"{FULLNAME}-metrics"),
    ])
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "neuron-operator"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"  # never the operator's own managed-by value
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == NAMESPACE


def test_all_namespaces_mode_binds_application_rules_cluster_wide():
    docs = render()
    role = one(docs, "ClusterRole", FULLNAME)
    assert rules_of(role) == APPLICATION_RULES
    binding = one(docs, "ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FULLNAME}
    assert binding["subjects"] == [SERVICE_ACCOUNT]
    assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding")
    args = container(docs)["args"]
    assert "--all-namespaces" in args and not [a for a in args if a.startswith("--namespace")]
    assert env_of(docs)["NEURON_OPERATOR_NAMESPACES"] == ""


def test_watch_namespaces_mode_uses_a_role_per_namespace():
    docs = render({"watchNamespaces": ["team-a", "team-b"]})

    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rules_of(role) == APPLICATION_RULES
    bindings = of_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME}
        assert binding["subjects"] == [SERVICE_ACCOUNT]
    # The only cluster-scoped grant left is kopf's own.
    assert [r["metadata"]["name"] for r in of_kind(docs, "ClusterRole")] == [f"{FULLNAME}-kopf"]
    assert [b["metadata"]["name"] for b in of_kind(docs, "ClusterRoleBinding")] == [f"{FULLNAME}-kopf"]
    args = container(docs)["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in args
    assert env_of(docs)["NEURON_OPERATOR_NAMESPACES"] == "team-a,team-b"


@pytest.mark.parametrize("values", ALL_RENDERS, ids=["default", "namespaced", "servicemonitor", "existing-sa"])
def test_kopf_rules_are_cluster_wide_in_every_mode(values: dict):
    docs = render(values)
    role = one(docs, "ClusterRole", f"{FULLNAME}-kopf")
    assert rules_of(role) == KOPF_RULES
    binding = one(docs, "ClusterRoleBinding", f"{FULLNAME}-kopf")
    assert binding["roleRef"]["name"] == f"{FULLNAME}-kopf"
    sa_name = values.get("serviceAccount", {}).get("name") or FULLNAME
    assert binding["subjects"] == [{**SERVICE_ACCOUNT, "name": sa_name}]


@pytest.mark.parametrize("values", ALL_RENDERS, ids=["default", "namespaced", "servicemonitor", "existing-sa"])
def test_rbac_never_grants_secrets_nodes_or_wildcards(values: dict):
    for doc in render(values):
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in doc["rules"]:
            assert not FORBIDDEN_RESOURCES & set(rule["resources"]), (doc["metadata"]["name"], rule)
            assert "*" not in rule["verbs"] and "*" not in rule["apiGroups"], (doc["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule


def test_every_rbac_rule_has_a_comment():
    sources = [CHART / "templates" / "_helpers.tpl", CHART / "templates" / "rbac-kopf.yaml"]
    for source in sources:
        lines = source.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("- apiGroups:"):
                assert lines[i - 1].strip().startswith("#"), f"{source.name}:{i + 1}: rule without a comment"


def test_existing_service_account():
    docs = render({"serviceAccount": {"create": False, "name": "existing"}})
    assert not of_kind(docs, "ServiceAccount")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    assert "serviceAccount.name is required" in render_error({"serviceAccount": {"create": False}})


def test_service_account_annotations_for_irsa():
    arn = "arn:aws:iam::111122223333:role/neuron-operator"
    docs = render({"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": arn}}})
    assert one(docs, "ServiceAccount")["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": arn}


# --- the Deployment -----------------------------------------------------------------------------------------


def test_deployment_is_one_recreated_standalone_replica():
    deployment = one(render(), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--standalone" in container(render())["args"]


def test_deployment_security_contexts():
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    ctx = pod["containers"][0]["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["privileged"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is True  # the operator needs its token, nothing more
    assert "hostNetwork" not in pod and "hostPID" not in pod


def test_deployment_has_a_writable_tmp_for_the_read_only_root():
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}
    volume = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert "emptyDir" in volume


def test_deployment_probes_and_ports():
    c = container(render())
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--liveness=http://0.0.0.0:8081/healthz" in c["args"]


def test_deployment_uses_the_image_entrypoint():
    c = container(render())
    # No `command`: the image's ENTRYPOINT (neuron-operator) runs; args replace its CMD (run ...).
    assert "command" not in c
    assert c["args"][:2] == ["run", "--standalone"]


def test_deployment_env_defaults():
    env = env_of(render())
    assert env == {
        "NEURON_OPERATOR_NAMESPACES": "",
        "NEURON_OPERATOR_COMPILE_BACKOFF_LIMIT": "2",
        "NEURON_OPERATOR_COMPILE_DEADLINE_SECONDS": "14400",
        "NEURON_OPERATOR_METRICS_PORT": "8080",
        "NEURON_OPERATOR_WORKERS": "4",
    }


def test_deployment_env_from_runtime_values():
    env = env_of(render({
        "runtime": {"images": {"neuron-2.23-vllm-0.7.2": "123456789012.dkr.ecr.us-west-2.amazonaws.com/neuron-runtime:2.23"},
                    "defaultStacks": {"trn2": "neuron-2.32-vllm-neuron-0.24"}},
        "defaultArtifactStore": "s3://models/neuron",
        "compile": {"backoffLimit": 5, "activeDeadlineSeconds": 7200,
                    "nodeSelector": {"eks.amazonaws.com/nodegroup": "compile"},
                    "tolerations": [{"key": "dedicated", "value": "compile", "effect": "NoSchedule"}]},
        "metrics": {"port": 9090},
        "workers": 8,
    }))
    assert json.loads(env["NEURON_OPERATOR_RUNTIME_IMAGES"]) == {
        "neuron-2.23-vllm-0.7.2": "123456789012.dkr.ecr.us-west-2.amazonaws.com/neuron-runtime:2.23"}
    assert json.loads(env["NEURON_OPERATOR_DEFAULT_STACKS"]) == {"trn2": "neuron-2.32-vllm-neuron-0.24"}
    assert json.loads(env["NEURON_OPERATOR_COMPILE_NODE_SELECTOR"]) == {"eks.amazonaws.com/nodegroup": "compile"}
    assert json.loads(env["NEURON_OPERATOR_COMPILE_TOLERATIONS"]) == [
        {"key": "dedicated", "value": "compile", "effect": "NoSchedule"}]
    assert env["NEURON_OPERATOR_DEFAULT_ARTIFACT_STORE"] == "s3://models/neuron"
    assert env["NEURON_OPERATOR_COMPILE_BACKOFF_LIMIT"] == "5"
    assert env["NEURON_OPERATOR_COMPILE_DEADLINE_SECONDS"] == "7200"
    assert env["NEURON_OPERATOR_METRICS_PORT"] == "9090"
    assert env["NEURON_OPERATOR_WORKERS"] == "8"


def test_operator_config_reads_the_rendered_env():
    from neuron_operator.config import OperatorConfig

    env = env_of(render({"watchNamespaces": ["team-a", "team-b"], "defaultArtifactStore": "pvc://neuron-artifacts",
                         "compile": {"backoffLimit": 3, "activeDeadlineSeconds": 3600,
                                     "nodeSelector": {"pool": "compile"}},
                         "runtime": {"defaultStacks": {"trn2": "neuron-2.32-vllm-neuron-0.24"},
                                     "images": {"neuron-2.32-vllm-neuron-0.24": "registry.example/rt:1"}}}))
    config = OperatorConfig.from_env(env)
    assert config.namespaces == ("team-a", "team-b")
    assert config.default_artifact_store == "pvc://neuron-artifacts"
    assert (config.compile_backoff_limit, config.compile_active_deadline_seconds) == (3, 3600)
    assert (config.metrics_port, config.metrics_address) == (8080, "0.0.0.0")  # in a pod: scraped on its IP
    assert OperatorConfig.from_env({"NEURON_OPERATOR_METRICS_ADDRESS": "127.0.0.1"}).metrics_address == "127.0.0.1"
    assert config.default_stack("trn2") == "neuron-2.32-vllm-neuron-0.24"
    assert config.default_stack("trn1") == "neuron-2.23-vllm-0.7.2"  # the built-in default stays for the rest
    assert config.image_for("neuron-2.32-vllm-neuron-0.24") == "registry.example/rt:1"
    assert dict(config.compile_node_selector) == {"pool": "compile"}


def test_chart_rejects_a_stack_that_does_not_fit_the_family():
    from neuron_operator.config import ConfigError, OperatorConfig

    env = env_of(render({"runtime": {"defaultStacks": {"trn1": "neuron-2.32-vllm-neuron-0.24"}}}))
    with pytest.raises(ConfigError, match="trn1: neuron-2.32-vllm-neuron-0.24 supports only trn2, trn3"):
        OperatorConfig.from_env(env)


def test_image_reference():
    assert container(render())["image"] == "public.ecr.aws/neuron-operator/neuron-operator:0.1.0"
    assert container(render({"image": {"tag": "0.2.0-rc1"}}))["image"].endswith(":0.2.0-rc1")
    digest = "sha256:" + "a" * 64
    assert container(render({"image": {"digest": digest}}))["image"] == f"public.ecr.aws/neuron-operator/neuron-operator@{digest}"


def test_debug_logging_passes_verbose():
    assert "--verbose" not in container(render())["args"]
    assert "--verbose" in container(render({"logging": {"level": "debug"}}))["args"]


def test_pod_scheduling_and_metadata_values():
    values = {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "eks.amazonaws.com/compute-type", "operator": "NotIn", "values": ["fargate"]}]}]}}},
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"example.com/team": "ml"},
        "podLabels": {"team": "ml"},
        "imagePullSecrets": [{"name": "ecr-pull"}],
    }
    deployment = one(render(values), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "ecr-pull"}]
    meta = deployment["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"example.com/team": "ml"}
    assert meta["labels"]["team"] == "ml"
    # podLabels must not leak into the immutable selector.
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "neuron-operator", "app.kubernetes.io/instance": RELEASE}


@pytest.mark.parametrize("values", [*ALL_RENDERS, {"logging": {"level": "debug", "format": "json"}, "watchNamespaces": ["a"]}],
                         ids=["default", "namespaced", "servicemonitor", "debug", "debug-json-namespaced"])
def test_rendered_args_are_accepted_by_the_operator_cli(values: dict):
    args = container(render(values))["args"]
    # argparse checks choices and mutually exclusive flags before the trailing --help exits 0 (instead of
    # exec'ing kopf); unknown flags it only reports after parsing, so those are checked against the help text.
    proc = subprocess.run([sys.executable, "-m", "neuron_operator.cli", *args, "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"neuron-operator {' '.join(args)}: {proc.stderr}"
    known = set(re.findall(r"--[a-z][a-z-]*", proc.stdout))
    flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    assert flags <= known, f"flags `neuron-operator run` does not know: {sorted(flags - known)}"


def test_log_format_is_passed_to_the_operator():
    assert "--log-format=full" in container(render())["args"]
    assert "--log-format=json" in container(render({"logging": {"format": "json"}}))["args"]


# --- metrics ------------------------------------------------------------------------------------------------


def test_metrics_service_selects_the_operator_pod():
    docs = render()
    service = one(docs, "Service", f"{FULLNAME}-metrics")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert not of_kind(render({"metrics": {"service": {"enabled": False}}}), "Service")


def test_service_monitor_absent_by_default():
    assert not of_kind(render(), "ServiceMonitor")


def test_service_monitor_rendered_when_enabled():
    docs = render({"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "10s",
                                                  "labels": {"release": "kube-prometheus-stack"}}}})
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}]
    service = one(docs, "Service", f"{FULLNAME}-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_service_monitor_needs_the_metrics_service():
    error = render_error({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})
    assert "metrics.service.enabled" in error


def _serving_pod_templates() -> list[dict]:
    """The pod templates of every serving workload in the builders' goldens (single- and multi-node)."""
    templates = []
    for golden in sorted((ROOT / "tests" / "unit" / "golden").glob("*-children.yaml")):
        for doc in yaml.safe_load_all(golden.read_text(encoding="utf-8")):
            if doc and doc["kind"] in ("Deployment", "StatefulSet"):
                templates.append(doc["spec"]["template"])
    assert {t["metadata"]["labels"].get("app.kubernetes.io/component") for t in templates} == {"serving"}
    return templates


def _prometheus_label(pod_label: str) -> str:
    """The meta label Prometheus' Kubernetes discovery gives a pod label (non-alphanumerics become '_')."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


def test_pod_monitor_absent_by_default():
    assert not of_kind(render(), "PodMonitor")


def test_pod_monitor_scrapes_the_serving_pods_of_every_service():
    from neuron_operator import constants as C

    docs = render({"metrics": {"podMonitor": {"enabled": True, "interval": "30s", "scrapeTimeout": "10s",
                                              "labels": {"release": "kube-prometheus-stack"}}}})
    monitor = one(docs, "PodMonitor", f"{FULLNAME}-serving")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert spec["selector"] == {"matchLabels": {C.LABEL_MANAGED_BY: C.MANAGED_BY,
                                                C.LABEL_COMPONENT: C.COMPONENT_SERVING}}
    assert spec["namespaceSelector"] == {"any": True}  # services live in the users' namespaces
    [endpoint] = spec["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"], endpoint["scrapeTimeout"]) == (
        C.HTTP_PORT_NAME, "/metrics", "30s", "10s")
    # What the operator builds matches: every serving pod carries the selector's labels and the named port.
    for template in _serving_pod_templates():
        assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        ports = [p["name"] for c in template["spec"]["containers"] for p in c.get("ports") or []]
        assert endpoint["port"] in ports
    # Multi-node workers (StatefulSet pods 1..n) run no HTTP server: only index 0 and Deployment pods remain.
    drop, nis = endpoint["relabelings"]
    assert drop == {"sourceLabels": [_prometheus_label(C.LABEL_POD_INDEX)], "regex": "[1-9][0-9]*",
                    "action": "drop"}
    assert all(not re.fullmatch(drop["regex"], index) for index in ("0", "")) and re.fullmatch(drop["regex"], "12")
    assert nis == {"sourceLabels": [_prometheus_label(C.LABEL_SERVICE)], "targetLabel": "nis"}


def test_pod_monitor_follows_the_watched_namespaces():
    docs = render({"watchNamespaces": ["team-a", "team-b"], "metrics": {"podMonitor": {"enabled": True}}})
    assert one(docs, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert "scrapeTimeout" not in one(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]


def test_helm_lint_strict_with_every_monitoring_object():
    values = {"watchNamespaces": ["team-a"], "metrics": {"serviceMonitor": {"enabled": True},
                                                         "podMonitor": {"enabled": True},
                                                         "dashboards": {"enabled": True}}}
    proc = helm("lint", str(CHART), "--strict", "--namespace", NAMESPACE, values=values)
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


# --- what users read ----------------------------------------------------------------------------------------


def test_notes_say_what_to_do_next():
    notes = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client").stdout
    notes = notes[notes.index("NOTES:"):]
    for text in ("defaultArtifactStore", "kubectl apply -f examples/llama.yaml", "kubectl get nis -w",
                 "kubectl wait --for=condition=Ready", "kubectl apply --server-side --force-conflicts -f charts/neuron-operator/crds/",
                 "does NOT upgrade CRDs"):
        assert text in notes, f"NOTES.txt lacks {text!r}"


def test_readme_covers_install_upgrade_uninstall_and_gitops():
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    for text in ("helm install", "kubectl apply --server-side --force-conflicts -f charts/neuron-operator/crds/", "helm uninstall",
                 "resource.customizations.health.inference.neuron-operator.io_NeuronInferenceService",
                 "health/neuroninferenceservice.lua", "Flux", "wait: true"):
        assert text in readme, f"charts/neuron-operator/README.md lacks {text!r}"


def test_values_yaml_is_commented():
    # Every top-level key has a comment right above it (or above its block), so values.yaml reads as documentation.
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-zA-Z]\w*:", line):
            assert i > 0 and lines[i - 1].startswith("#") or _block_has_comments(lines, i), f"values.yaml: {line}"


def _block_has_comments(lines: list[str], start: int) -> bool:
    """A block key (e.g. `image:`) is documented when its first child line is a comment."""
    return start + 1 < len(lines) and lines[start + 1].lstrip().startswith("#")
