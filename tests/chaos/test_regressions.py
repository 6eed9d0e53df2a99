"""Operator bugs the failure suite found, each reproduced on its own and kept as a regression test:

* a character beyond U+FFFF in a field copied into a child: apply bodies were json.dumps() output (ASCII), whose
  surrogate-pair escapes the API server's YAML decoder refuses (400), so the child was never applied and the
  service stayed Compiling with no message (fixed: kube.apply_body sends such characters raw in UTF-8);
* the API server gone mid-pass: the connection error was logged at ERROR with a traceback (fixed: it is an
  ApiError with status 0, retried with backoff and logged on one line)."""

from __future__ import annotations

import pytest

from tests.bench.harness import kill_apiserver, restart_apiserver

from .scenario import apply, service, wait_ready


@pytest.mark.parametrize("field", ["podAnnotations", "env"])
def test_astral_plane_character_in_a_child_field_reaches_ready(api, namespace, operator, field):
    # Both are free text the API accepts and the operator copies into the serving Deployment's pod template.
    runtime = ({"podAnnotations": {"team/note": "llama \U0001F999"}} if field == "podAnnotations"
               else {"env": [{"name": "GREETING", "value": "hi \U0001F999"}]})
    apply(namespace, [service("emoji", runtime=runtime)])
    wait_ready(api, namespace, ["emoji"], timeout=20)  # an unaffected service is Ready in 2-8 s


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
