"""The API client's own encoding and error classification (no cluster: a closed local port for "unreachable")."""

from __future__ import annotations

import json
import socket

import pytest
import yaml
from kubernetes import client as k8s_client

from neuron_operator.kube import UNREACHABLE, ApiError, KubeClient, apply_body


@pytest.mark.parametrize("text", ["llama \U0001F999", "caf\u00e9", "tab\tquote\"back\\slash", "\u4e2d\u6587"])
def test_apply_body_is_json_and_yaml_with_the_same_value(text):
    obj = {"metadata": {"annotations": {"note": text}}}
    body = apply_body(obj)
    assert json.loads(body) == obj
    assert yaml.safe_load(body.decode("utf-8")) == obj  # the API server decodes apply patches as YAML


def test_apply_body_sends_astral_characters_raw_not_as_surrogate_escapes():
    body = apply_body({"v": "\U0001F999"})
    assert "\U0001F999".encode("utf-8") in body and b"\\ud83e" not in body


def test_apply_body_keeps_characters_yaml_refuses_raw_escaped():
    body = apply_body({"v": "a\x85b\x7fc\ufeff"})
    assert body == b'{"v": "a\\u0085b\\u007fc\\ufeff"}'
    assert yaml.safe_load(body.decode()) == {"v": "a\x85b\x7fc\ufeff"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_answer_is_an_unreachable_api_error_not_a_crash():
    configuration = k8s_client.Configuration()
    configuration.host = f"https://127.0.0.1:{_closed_port()}"
    configuration.verify_ssl = False
    configuration.retries = False
    client = KubeClient(configuration=configuration, timeout=2)
    with pytest.raises(ApiError) as caught:
        client.get("v1", "Service", "ns", "x")
    assert caught.value.unreachable and caught.value.status == UNREACHABLE
    assert "GET /api/v1/namespaces/ns/services/x" in caught.value.message
    assert client.stats.snapshot() == {"get": 1}


def test_listed_items_get_the_apiversion_and_kind_a_list_response_leaves_out():
    """The API server's LIST puts apiVersion/kind on the list only; without them a primed cache object never
    "contains" our manifest, so a restarted operator re-applied every child and showed Deploying for a moment."""
    import http.server
    import threading

    body = json.dumps({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {},
                       "items": [{"metadata": {"name": "a", "namespace": "ns"}, "spec": {}}]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configuration = k8s_client.Configuration()
        configuration.host = f"http://127.0.0.1:{server.server_port}"
        [item] = KubeClient(configuration=configuration, timeout=5).list("apps/v1", "Deployment", "ns")
    finally:
        server.shutdown()
    assert (item["apiVersion"], item["kind"], item["metadata"]["name"]) == ("apps/v1", "Deployment", "a")


def test_a_namespace_terminating_refusal_is_told_apart_from_other_forbidden_errors():
    from neuron_operator.kube import _error_from_body

    body = {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": 'deployments.apps "llama" is forbidden: unable to create new content in namespace ml because '
                       "it is being terminated",
            "details": {"name": "llama", "kind": "deployments",
                        "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                                    "message": "namespace ml is being terminated"}]}}
    err = _error_from_body(403, json.dumps(body).encode())
    assert err.namespace_terminating and err.causes == ("NamespaceTerminating",)
    rbac = _error_from_body(403, json.dumps({"reason": "Forbidden", "message": "cannot create"}).encode())
    assert not rbac.namespace_terminating
    assert not _error_from_body(403, b"not json").namespace_terminating
