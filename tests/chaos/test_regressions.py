"""Operator bugs the failure suite found, each reproduced on its own (strict xfail: the test fails today and
starts failing the suite as XPASS the day the bug is fixed, so the marker gets removed with the fix).
`pytest tests/chaos/test_regressions.py --runxfail` shows the failures."""

from __future__ import annotations

import pytest

from tests.bench.harness import kill_apiserver, restart_apiserver

from .scenario import apply, service, wait_ready


@pytest.mark.xfail(strict=True, reason=(
    "the operator sends server-side apply bodies as json.dumps() output (ASCII, so U+1F999 becomes the surrogate "
    "pair escape \\ud83e\\udd99); the API server decodes apply patches as YAML, which refuses surrogate escapes "
    "('yaml: found invalid Unicode character escape code', 400). The Deployment is never applied; the pass is "
    "retried with backoff forever and the service stays Compiling, Stalled=False, with no message saying why"))
@pytest.mark.parametrize("field", ["podAnnotations", "env"])
def test_astral_plane_character_in_a_child_field_reaches_ready(api, namespace, operator, field):
    # Both are free text the API accepts and the operator copies into the serving Deployment's pod template.
    runtime = ({"podAnnotations": {"team/note": "llama \U0001F999"}} if field == "podAnnotations"
               else {"env": [{"name": "GREETING", "value": "hi \U0001F999"}]})
    apply(namespace, [service("emoji", runtime=runtime)])
    wait_ready(api, namespace, ["emoji"], timeout=20)  # an unaffected service is Ready in 2-8 s


@pytest.mark.xfail(strict=True, reason=(
    "a connection error (urllib3 NewConnectionError/MaxRetryError while the API server is down) is not classified "
    "as transient: the work queue logs 'reconcile of <ns>/<name> failed' at ERROR with the whole traceback chain "
    "(then retries), and counts it as reason=exception"))
def test_api_server_gone_mid_pass_leaves_no_traceback(api, namespace, operator):
    names = [f"gone-{i}" for i in range(4)]
    fast = {"podAnnotations": {}}  # kwok's default compile time: 1-6 s
    apply(namespace, [service(n, revision=f"r{i}", runtime=fast) for i, n in enumerate(names)])
    wait_ready(api, namespace, names, timeout=60)
    # A change to every service starts four passes at once; the API server dies under them.
    apply(namespace, [service(n, revision=f"r{i}", runtime=fast, replicas=0) for i, n in enumerate(names)])
    kill_apiserver()
    restart_apiserver(downtime=2)
    wait_ready(api, namespace, names, timeout=60, extra=lambda svc: svc["status"].get("replicas") == 0)
    assert operator.alive
    assert operator.tracebacks() == []
