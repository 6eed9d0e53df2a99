"""e2e fixtures: the real local control plane (hack/cluster.sh), a fresh namespace per test, and a dump of
events, pods and component log tails when a test fails."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import subprocess
import uuid

import pytest

from .kube import kubectl

ROOT = pathlib.Path(__file__).resolve().parents[2]
TESTENV_DIR = pathlib.Path(os.environ.get("TESTENV_DIR", ROOT / ".testenv"))
COMPONENT_LOGS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "etcd")
# The CPU node of the simulated cluster that compiles (operator/neuron_operator/data/instance_types.yaml cpuNodes).
COMPILE_POOL_LABEL, COMPILE_POOL_VALUE = "node.kubernetes.io/instance-type", "m7i.16xlarge"


def pytest_collection_modifyitems(items):
    for item in items:
        if pathlib.Path(str(item.fspath)).is_relative_to(ROOT / "tests" / "e2e"):
            item.add_marker(pytest.mark.e2e)


def _cluster_running() -> bool:
    return subprocess.run([str(ROOT / "hack" / "cluster.sh"), "status"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def cluster():
    """Bring the control plane up (or reuse a running one); stop it at the end only if this session started it."""
    env_before = {k: os.environ.get(k) for k in ("KUBECONFIG", "PATH")}
    reused = _cluster_running()
    subprocess.run([str(ROOT / "hack" / "cluster.sh"), "up"], check=True)
    bin_dir = subprocess.run([str(ROOT / "hack" / "testenv-build.sh")], check=True, capture_output=True,
                             text=True).stdout.strip().splitlines()[-1]
    os.environ["KUBECONFIG"] = str(TESTENV_DIR / "kubeconfig")
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    yield {"kubeconfig": os.environ["KUBECONFIG"], "bin": bin_dir, "dir": TESTENV_DIR}
    for key, value in env_before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if not reused and not os.environ.get("TESTENV_KEEP"):
        subprocess.run([str(ROOT / "hack" / "cluster.sh"), "down"], check=False)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:40].strip("-")


def dump_diagnostics(namespace: str) -> str:
    parts = []
    for args in (("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
                 ("get", "all,pdb,jobs", "-n", namespace, "-o", "wide"),
                 ("get", "pods", "-n", namespace, "-o", "yaml")):
        proc = kubectl(*args, check=False)
        parts.append(f"$ kubectl {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    for name in COMPONENT_LOGS:
        log = TESTENV_DIR / f"{name}.log"
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-25:]
            parts.append(f"--- tail {log}\n" + "\n".join(tail))
    return "\n".join(parts)


@pytest.fixture
def namespace(cluster, request):
    name = f"t-{_slug(request.node.name)}-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", name)
    yield name
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(f"\n===== diagnostics for namespace {name} =====\n{dump_diagnostics(name)}")
    kubectl("delete", "namespace", name, "--wait=false", check=False)


# --- the operator under test -------------------------------------------------------------------------------

from .kube import free_port as _free_port  # noqa: E402 - kept next to its users


@pytest.fixture(scope="session")
def crds(cluster):
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "neuroninferenceservices.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/neuroninferenceservices.inference.neuron-operator.io",
            "--timeout=60s")
    return True


@contextlib.contextmanager
def run_operator(namespace_pattern: str, log_name: str, extra_env: dict[str, str] | None = None):
    """The operator as users run it (`neuron-operator run`) in a child process, watching ``namespace_pattern``;
    yields once its liveness endpoint answers, stops it by its pid afterwards."""
    import sys
    import time
    import urllib.request

    metrics_port, health_port = _free_port(), _free_port()
    log_path = TESTENV_DIR / log_name
    env = {**os.environ, "NEURON_OPERATOR_METRICS_PORT": str(metrics_port),
           "NEURON_OPERATOR_METRICS_ADDRESS": "127.0.0.1",
           "NEURON_OPERATOR_WATCH_TIMEOUT": "60",
           # CPU compiles (vllm-neuron stacks) go to the simulated cluster's compile pool, as a Helm user would set
           # compile.nodeSelector; the instance type stands in for a node group label.
           "NEURON_OPERATOR_COMPILE_NODE_SELECTOR": json.dumps({COMPILE_POOL_LABEL: COMPILE_POOL_VALUE}),
           **(extra_env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "neuron_operator.cli", "run", f"--namespace={namespace_pattern}", "--standalone",
             f"--liveness=http://127.0.0.1:{health_port}/healthz"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"operator did not start; log:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.3)
        yield {"process": proc, "metrics_port": metrics_port, "log": log_path}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def operator(cluster, crds):
    """The operator watching all t-* namespaces, for the whole session."""
    # Tests run in t-* namespaces; iso-* namespaces belong to operators a test starts itself (e.g. as the chart's
    # ServiceAccount, or with another autoscaling provider), which must not be helped by this one.
    with run_operator("t-*", "operator-e2e.log") as running:
        yield running


@pytest.fixture
def artifact_store(namespace):
    """A bound ReadWriteMany claim named 'artifacts' in the test namespace (static PV, real PV controller)."""
    from .nis import create_artifact_store

    pv_name = create_artifact_store(namespace)
    yield "artifacts"
    kubectl("delete", "pv", pv_name, "--wait=false", check=False)
