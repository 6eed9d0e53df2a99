"""The chart's monitoring objects against the real Prometheus Operator CRDs: the PodMonitor, the ServiceMonitor and
the dashboards ConfigMap are accepted by the API server with strict field validation (an unknown or misspelt field
fails instead of being pruned). The CRDs come from the prometheus-operator Go module, pinned below."""

from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import ROOT
from .kube import kubectl

# prometheus-operator's CRDs ship in its module (example/prometheus-operator-crd/); v0.85.0 was the latest release on
# the module proxy when the chart's monitors were written.
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
CRDS = ("podmonitors", "servicemonitors")
CHART = ROOT / "charts" / "neuron-operator"


@pytest.fixture(scope="module")
def monitoring_crds(cluster, tmp_path_factory):
    proc = subprocess.run(["go", "mod", "download", "-json", PROMETHEUS_OPERATOR], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path_factory.mktemp("gomod"), check=False)
    assert proc.returncode == 0, f"go mod download {PROMETHEUS_OPERATOR} failed:\n{proc.stdout}{proc.stderr}"
    crd_dir = json.loads(proc.stdout)["Dir"] + "/example/prometheus-operator-crd"
    existed = {name for name in CRDS
               if kubectl("get", "crd", f"{name}.monitoring.coreos.com", check=False).returncode == 0}
    for name in CRDS:
        kubectl("apply", "--server-side", "-f", f"{crd_dir}/monitoring.coreos.com_{name}.yaml")
        kubectl("wait", "--for=condition=Established", f"crd/{name}.monitoring.coreos.com", "--timeout=60s")
    yield
    for name in set(CRDS) - existed:
        kubectl("delete", "crd", f"{name}.monitoring.coreos.com", "--wait=false", check=False)


def rendered(namespace: str, *sets: str) -> str:
    args = ["helm", "template", "nrn", str(CHART), "--namespace", namespace,
            "--set", "metrics.podMonitor.enabled=true", "--set", "metrics.podMonitor.scrapeTimeout=10s",
            "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.dashboards.enabled=true",
            "--show-only", "templates/podmonitor.yaml", "--show-only", "templates/servicemonitor.yaml",
            "--show-only", "templates/dashboards-configmap.yaml"]
    for value in sets:
        args += ["--set", value]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.mark.parametrize("sets", [(), ("watchNamespaces={team-a,team-b}",)], ids=["all-namespaces", "namespaced"])
def test_the_real_crds_accept_the_charts_monitors(monitoring_crds, namespace, sets):
    proc = kubectl("apply", "--server-side", "--validate=strict", "--dry-run=server", "-n", namespace, "-f", "-",
                   input=rendered(namespace, *sets))
    assert {line.split()[0] for line in proc.stdout.splitlines()} == {
        "podmonitor.monitoring.coreos.com/nrn-neuron-operator-serving",
        "servicemonitor.monitoring.coreos.com/nrn-neuron-operator",
        "configmap/nrn-neuron-operator-dashboards"}, proc.stdout


def test_strict_validation_would_catch_a_misspelt_field(monitoring_crds, namespace):
    broken = rendered(namespace).replace("podMetricsEndpoints:", "podMetricEndpoints:")
    proc = kubectl("apply", "--server-side", "--validate=strict", "--dry-run=server", "-n", namespace, "-f", "-",
                   input=broken, check=False)
    assert proc.returncode != 0 and "podMetricEndpoints" in proc.stderr, proc.stdout + proc.stderr
