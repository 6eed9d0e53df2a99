"""Failure-suite fixtures: the local control plane with extra simulated inf2.xlarge nodes, a fresh chaos-*
namespace with an artifact claim per test, the operator as a child process each test may SIGKILL and restart,
and a figures table printed at the end of the session (measured, never asserted on).

The random moments and the generated specs come from one seed, printed with the figures: fixed by default so
`make test` checks the same corpus every run, CHAOS_SEED=<n> to replay one, CHAOS_SEED=random to explore.
"""

from __future__ import annotations

import os
import random
import re
import uuid

import pytest

from tests.bench.harness import (Api, OperatorProcess, apply_nodes, artifact_store, cluster_down, cluster_up,
                                 delete_nodes, sh, wait_nodes_ready)

NODE_TAG = "chaos-"
# One device each; enough that a test never waits for the devices of the previous test's namespace, which is
# deleted in the background (waiting for it would cost 5-25 s per test).
EXTRA_NODES = "inf2.xlarge=40"
_FIGURES: list[tuple[str, str, str]] = []  # (scenario, figure, value)


def pytest_configure(config):
    config.addinivalue_line("markers", "chaos: failure suite on the real control plane (tests/chaos)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/chaos/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.chaos)


def record(scenario: str, figure: str, value: object) -> None:
    """One line of the figures table printed after the session."""
    _FIGURES.append((scenario, figure, str(value)))


def pytest_terminal_summary(terminalreporter):
    if not _FIGURES:
        return
    terminalreporter.section("failure-suite figures")
    terminalreporter.write_line(f"seed: {SEED} (CHAOS_SEED={SEED} replays the same random moments and specs)")
    width = max(len(f"{s}: {f}") for s, f, _ in _FIGURES)
    for scenario, figure, value in _FIGURES:
        terminalreporter.write_line(f"{scenario + ': ' + figure:<{width}}  {value}")


DEFAULT_SEED = 20261201
_seed = os.environ.get("CHAOS_SEED", "")
SEED = random.SystemRandom().randrange(1, 2**31) if _seed == "random" else int(_seed or DEFAULT_SEED)


@pytest.fixture
def rng(request) -> random.Random:
    return random.Random(f"{SEED}-{request.node.name}")


@pytest.fixture(scope="package")
def chaos_cluster():
    """The control plane (started here unless running: then it is left running) with the extra nodes, for this
    package only: `make test` runs the e2e tier next, which must find the cluster as it would without us."""
    env_before = {k: os.environ.get(k) for k in ("KUBECONFIG", "PATH")}
    reused = cluster_up()
    apply_nodes(EXTRA_NODES, NODE_TAG)
    wait_nodes_ready(120)
    yield Api()
    if reused:  # leave a running cluster clean: our namespaces gone (their pods hold devices), our nodes too
        for ns in sh("kubectl", "get", "namespaces", "-o", "name").split():
            if ns.startswith("namespace/chaos-"):
                sh("kubectl", "delete", ns, "--timeout=180s", check=False)
    delete_nodes(NODE_TAG)
    for key, value in env_before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if not reused and not os.environ.get("TESTENV_KEEP"):
        cluster_down()


@pytest.fixture
def api(chaos_cluster) -> Api:
    return chaos_cluster


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:30].strip("-")


@pytest.fixture
def namespace(api, request):
    """A fresh chaos-* namespace with a bound RWX claim named 'artifacts'; deleted afterwards (not waited for)."""
    name = f"chaos-{_slug(request.node.name.removeprefix('test_'))}-{uuid.uuid4().hex[:4]}"
    sh("kubectl", "create", "namespace", name)
    artifact_store(name, f"{name}-artifacts")
    yield name
    sh("kubectl", "delete", "namespace", name, "--wait=false", check=False)
    sh("kubectl", "delete", "pv", f"{name}-artifacts", "--wait=false", check=False)


@pytest.fixture
def operator(api, namespace, request):
    """The operator (`neuron-operator run --namespace=<this test's namespace> --standalone`), started; the test
    may kill and restart it. Always stopped afterwards; its log is kept in $TESTENV_DIR."""
    proc = OperatorProcess(f"chaos-{_slug(request.node.name)}", [namespace])
    proc.start()
    yield proc
    proc.stop()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(f"\n===== operator log tail ({proc.log_path}) =====\n{proc.log_tail(60)}")
