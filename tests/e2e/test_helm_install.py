"""The Helm chart installed like a user would, and the operator running with nothing but the chart's RBAC.

`helm install` in namespaced mode (watchNamespaces=[app]), then the operator runs locally as the chart's
ServiceAccount: a TokenRequest token in a kubeconfig that holds only the server, the CA and that token. It must
bring a service to Ready in the watched namespace, while the ServiceAccount can do nothing it does not need
(no Secrets, no Nodes, no workloads outside the watched namespace). `helm uninstall` keeps the CRD and the
services. The namespaces are named iso-*: the session operator (t-* only) never touches them, so whatever
progress happens there is this ServiceAccount-bound operator's.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Optional

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from . import nis
from .conftest import ROOT, TESTENV_DIR, dump_diagnostics
from .kube import free_port, kubectl, kubectl_json, wait_until

CHART = ROOT / "charts" / "neuron-operator"
RELEASE = "neuron-operator"  # fullname "neuron-operator" -> ServiceAccount "neuron-operator"
SERVICE_ACCOUNT = "neuron-operator"
CRD = "neuroninferenceservices.inference.neuron-operator.io"


def helm(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(["helm", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def _artifact_store(namespace: str) -> str:
    """A bound RWX claim 'artifacts' in `namespace` (like conftest's artifact_store); returns the PV name."""
    return nis.create_artifact_store(namespace)


def _token_only_kubeconfig(path, token: str, namespace: str) -> None:
    """A kubeconfig with the API server, its CA and the token: no admin client certificate anywhere."""
    admin = json.loads(kubectl("config", "view", "--raw", "-o", "json").stdout)
    cluster = admin["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority-data") or base64.b64encode(
        pathlib.Path(cluster["certificate-authority"]).read_bytes()).decode()
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {"server": cluster["server"], "certificate-authority-data": ca}}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "testenv", "user": SERVICE_ACCOUNT, "namespace": namespace}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


class SaOperator:
    """`neuron-operator run` in a child process, authenticated only as the chart's ServiceAccount."""

    def __init__(self, kubeconfig, namespace: str, log_path):
        self.health_port, self.metrics_port = free_port(), free_port()
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}  # never in-cluster config
        env.update(KUBECONFIG=str(kubeconfig), NEURON_OPERATOR_METRICS_PORT=str(self.metrics_port),
                   NEURON_OPERATOR_METRICS_ADDRESS="127.0.0.1",
                   NEURON_OPERATOR_WATCH_TIMEOUT="60")
        env.pop("NEURON_OPERATOR_NAMESPACES", None)
        self._env = env
        self._argv = [sys.executable, "-m", "neuron_operator.cli", "run", "--standalone", f"--namespace={namespace}",
                      f"--liveness=http://127.0.0.1:{self.health_port}/healthz"]
        self._log = None
        self.process: Optional[subprocess.Popen] = None
        self.started = 0.0

    def start(self) -> None:
        self._log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(self._argv, stdout=self._log, stderr=subprocess.STDOUT, env=self._env)

    def wait_healthy(self, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2)
                return time.monotonic() - self.started
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"operator did not become healthy; log:\n{self.log_tail()}")
                time.sleep(0.3)

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture(scope="module")
def iso_namespaces(cluster):
    """iso-app-<rand> (watched) and the names of iso-sys-<rand> (the release) and an unwatched iso-other-<rand>;
    every iso namespace and the artifacts PV are deleted at the end."""
    rand = uuid.uuid4().hex[:6]
    names = {"app": f"iso-app-{rand}", "sys": f"iso-sys-{rand}", "other": f"iso-other-{rand}", "rand": rand}
    kubectl("create", "namespace", names["app"])
    kubectl("create", "namespace", names["other"])
    yield names
    helm("uninstall", RELEASE, "-n", names["sys"], "--wait", "--timeout", "60s", check=False)
    for key in ("app", "sys", "other"):
        kubectl("delete", "namespace", names[key], "--wait=false", check=False)
    kubectl("delete", "pv", f"artifacts-{names['app']}"[:63], "--wait=false", check=False)


@pytest.fixture(scope="module")
def release(iso_namespaces):
    """The chart installed in namespaced mode, watching only the app namespace."""
    ns = iso_namespaces
    # Cluster-scoped names (ClusterRole/Binding neuron-operator-kopf) belong to at most one release named
    # neuron-operator at a time: say so plainly if another run holds them.
    existing = kubectl("get", "clusterrole", f"{RELEASE}-kopf", "-o", "json", check=False)
    if existing.returncode == 0:
        owner = json.loads(existing.stdout)["metadata"].get("annotations", {}).get("meta.helm.sh/release-namespace")
        wait_until(lambda: kubectl("get", "clusterrole", f"{RELEASE}-kopf", check=False).returncode != 0,
                   timeout=180, interval=3,
                   message=f"ClusterRole {RELEASE}-kopf of the release in namespace {owner} to go away")
    proc = helm("install", RELEASE, str(CHART), "-n", ns["sys"], "--create-namespace",
                "--set", f"watchNamespaces={{{ns['app']}}}", "--wait", "--timeout", "120s")
    kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=60s")
    return {"install_output": proc.stdout + proc.stderr, **ns}


@pytest.fixture(scope="module")
def sa_operator(release, tmp_path_factory):
    """The ServiceAccount's kubeconfig and an operator process bound to it (started by the first test that
    needs it running; stopped at the end)."""
    ns = release
    token = kubectl("create", "token", SERVICE_ACCOUNT, "-n", ns["sys"], "--duration=1h").stdout.strip()
    kubeconfig = tmp_path_factory.mktemp("sa") / "kubeconfig"
    _token_only_kubeconfig(kubeconfig, token, ns["app"])
    op = SaOperator(kubeconfig, ns["app"], TESTENV_DIR / f"operator-sa-{ns['rand']}.log")
    yield {"op": op, "kubeconfig": kubeconfig, **ns}
    op.stop()


def as_sa(kubeconfig, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    return kubectl("--kubeconfig", str(kubeconfig), *args, check=check)


def can_i(ns: dict[str, str], *args: str) -> bool:
    subject = f"system:serviceaccount:{ns['sys']}:{SERVICE_ACCOUNT}"
    proc = kubectl("auth", "can-i", *args, f"--as={subject}", check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return answer == "yes"


def _dump_on_failure(request, namespace: str, op: Optional[SaOperator] = None) -> None:
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(f"\n===== diagnostics for namespace {namespace} =====\n{dump_diagnostics(namespace)}")
        if op is not None:
            print(f"===== {op.log_path} (tail) =====\n{op.log_tail()}")


# --- the chart as a package ---------------------------------------------------------------------------------

def test_chart_lints_clean_in_both_modes(cluster):
    for values in ([], ["--set", "watchNamespaces={ml-prod,ml-staging}"]):
        proc = helm("lint", "--strict", str(CHART), *values)
        assert "0 chart(s) failed" in proc.stdout
        assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_rendered_chart_passes_server_side_dry_run(iso_namespaces):
    """What `helm install` would create is accepted by the real API server's validation and admission."""
    ns = iso_namespaces
    kubectl("get", "namespace", "default")
    for label, values, release_ns in (
            ("defaults", [], "default"),
            ("namespaced", ["--set", f"watchNamespaces={{{ns['app']},{ns['other']}}}"], ns["app"])):
        rendered = helm("template", RELEASE, str(CHART), "-n", release_ns, *values).stdout
        kinds = sorted({d["kind"] for d in yaml.safe_load_all(rendered) if d})
        proc = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
        assert proc.returncode == 0, f"{label}: {proc.stderr}"
        assert "(server dry run)" in proc.stdout, proc.stdout
        expected = {"ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"}
        expected |= {"Role", "RoleBinding"} if values else set()
        assert expected <= set(kinds), f"{label}: {kinds}"
    # With the CRD too (server-side: the CRD is too large for client-side apply's last-applied annotation).
    rendered = helm("template", RELEASE, str(CHART), "--include-crds").stdout
    proc = kubectl("apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", "-", input=rendered,
                   check=False)
    assert proc.returncode == 0, proc.stderr


# --- installed, and operated with the chart's rights only ----------------------------------------------------

def test_install_in_namespaced_mode(release):
    ns = release
    status = json.loads(helm("status", RELEASE, "-n", ns["sys"], "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    crd = kubectl_json("get", "crd", CRD)
    assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
    dep = kubectl_json("get", "deployment", RELEASE, "-n", ns["sys"])
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == SERVICE_ACCOUNT
    assert f"--namespace={ns['app']}" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    # Namespaced mode: application rights as a Role in the watched namespace, none cluster-wide.
    kubectl("get", "role", RELEASE, "-n", ns["app"])
    kubectl("get", "rolebinding", RELEASE, "-n", ns["app"])
    assert kubectl("get", "clusterrole", RELEASE, check=False).returncode != 0
    assert kubectl("get", "role", RELEASE, "-n", ns["other"], check=False).returncode != 0


def test_service_account_operator_brings_a_service_to_ready(sa_operator, request):
    ns, op = sa_operator, sa_operator["op"]
    try:
        # The kubeconfig really is the ServiceAccount and nothing else.
        whoami = json.loads(as_sa(sa_operator["kubeconfig"], "auth", "whoami", "-o", "json", check=True).stdout)
        assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns['sys']}:{SERVICE_ACCOUNT}"
        kubeconfig = yaml.safe_load(sa_operator["kubeconfig"].read_text())
        assert set(kubeconfig["users"][0]["user"]) == {"token"}

        _artifact_store(ns["app"])
        nis.apply(ns["app"], nis.service("sa-llama"))
        # No operator for iso-* yet: nothing happens (the session operator watches t-* only).
        time.sleep(5)
        assert "status" not in nis.get(ns["app"], "sa-llama") and nis.compile_jobs(ns["app"]) == []

        op.start()
        healthy_after = op.wait_healthy()
        started = time.monotonic()
        obj = nis.wait_ready(ns["app"], "sa-llama", timeout=240)
        ready_after = time.monotonic() - started
        print(f"\nSA operator: healthy {healthy_after:.1f}s after start; sa-llama Ready {ready_after:.1f}s later")

        app = ns["app"]
        [job] = nis.compile_jobs(app)
        assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
        assert obj["status"]["artifact"]["key"] == job["metadata"]["labels"]["inference.neuron-operator.io/artifact-key"]
        dep = nis.deployment(app, "sa-llama")
        assert dep["status"].get("availableReplicas") == 1
        kubectl("get", "service", "sa-llama", "-n", app)
        kubectl("get", "pdb", "sa-llama", "-n", app)
        for child in (job, dep):
            assert child["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]

        # Nothing was refused along the way: every API call the operator made is within the chart's RBAC.
        denied = [(n, ls, v) for n, ls, v in op.metrics()
                  if n == "neuron_operator_api_requests_total" and ls.get("code") in ("401", "403") and v]
        assert not denied, denied
        log = op.log_text()
        assert "Forbidden" not in log and " 403" not in log, op.log_tail()
        assert op.process.poll() is None, "the operator exited"
    finally:
        _dump_on_failure(request, ns["app"], op)


def test_service_account_has_least_privilege(sa_operator):
    ns = sa_operator
    app, other = ns["app"], ns["other"]
    # No Secrets anywhere (the HF token Secret is referenced by pods, never read by the operator).
    for verb in ("get", "list", "watch"):
        assert not can_i(ns, verb, "secrets", "-n", app)
        assert not can_i(ns, verb, "secrets", "--all-namespaces")
    # No Nodes.
    for verb in ("get", "list", "patch"):
        assert not can_i(ns, verb, "nodes")
    # No workloads outside the watched namespace.
    for namespace in ("default", other, ns["sys"]):
        assert not can_i(ns, "create", "deployments.apps", "-n", namespace)
        assert not can_i(ns, "create", "jobs.batch", "-n", namespace)
        assert not can_i(ns, "patch", "neuroninferenceservices", "--subresource=status", "-n", namespace)
    assert not can_i(ns, "create", "deployments.apps", "--all-namespaces")
    # No writes to the spec (users and GitOps own it), no wildcards, no configmaps.
    assert not can_i(ns, "patch", "neuroninferenceservices", "-n", app)
    assert not can_i(ns, "delete", "neuroninferenceservices", "-n", app)
    assert not can_i(ns, "create", "configmaps", "-n", app)
    assert not can_i(ns, "*", "*", "-n", app)
    # What it needs, in the watched namespace.
    assert can_i(ns, "create", "deployments.apps", "-n", app)
    assert can_i(ns, "patch", "deployments.apps", "-n", app)
    assert can_i(ns, "create", "jobs.batch", "-n", app)
    assert can_i(ns, "patch", "neuroninferenceservices", "--subresource=status", "-n", app)
    assert can_i(ns, "watch", "neuroninferenceservices", "-n", app)
    assert can_i(ns, "create", "events", "-n", app)
    assert can_i(ns, "list", "customresourcedefinitions.apiextensions.k8s.io")
    # And the real token is refused too, not only the impersonated check.
    denied = as_sa(ns["kubeconfig"], "get", "secrets", "-n", app)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr


def test_uninstall_keeps_the_crd_and_the_services(sa_operator, request):
    ns, op = sa_operator, sa_operator["op"]
    app = ns["app"]
    try:
        uid = nis.get(app, "sa-llama")["metadata"]["uid"]
        op.stop()  # the operator's own credentials go with the release
        helm("uninstall", RELEASE, "-n", ns["sys"], "--wait", "--timeout", "120s")
        assert helm("status", RELEASE, "-n", ns["sys"], check=False).returncode != 0
        wait_until(lambda: kubectl("get", "serviceaccount", SERVICE_ACCOUNT, "-n", ns["sys"], check=False).returncode != 0,
                   timeout=60, message="the ServiceAccount to be removed with the release")
        assert kubectl("get", "role", RELEASE, "-n", app, check=False).returncode != 0
        assert kubectl("get", "clusterrole", f"{RELEASE}-kopf", check=False).returncode != 0

        crd = kubectl_json("get", "crd", CRD)
        assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
        obj = nis.get(app, "sa-llama")
        assert obj["metadata"]["uid"] == uid and obj.get("status", {}).get("phase") == "Ready", obj.get("status")
        # The model keeps serving, unmanaged (README "Uninstall").
        time.sleep(3)  # garbage collection would act within moments if anything were orphaned
        assert nis.deployment(app, "sa-llama")["status"].get("availableReplicas") == 1
        assert len(nis.compile_jobs(app)) == 1
    finally:
        _dump_on_failure(request, app, op)
