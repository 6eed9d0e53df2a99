"""The Argo CD health check (charts/neuron-operator/health/neuroninferenceservice.lua) on real status documents.

Argo CD runs the script with the live object as the global ``obj`` and reads ``hs.status``/``hs.message`` from
the table it returns; we do the same in a Lua runtime (lupa). Fixtures are whole NeuronInferenceService objects
in testdata/argocd/, named ``<expected health>-<case>.yaml`` (healthy-, progressing-, degraded-), so a status
captured from a cluster (``kubectl get nis NAME -o yaml``) becomes a test case by saving it under such a name.
"""

from __future__ import annotations

import pathlib

import lupa
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "charts" / "neuron-operator" / "health" / "neuroninferenceservice.lua"
FIXTURES = ROOT / "tests" / "unit" / "testdata" / "argocd"
EXPECTED_BY_PREFIX = {"healthy": "Healthy", "progressing": "Progressing", "degraded": "Degraded"}
ARGO_HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def _to_lua(lua: lupa.LuaRuntime, value):
    """Python (YAML) value -> Lua value, recursively: dicts and lists become tables (lists 1-indexed)."""
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def health(obj: dict) -> tuple[str, str]:
    """Run the health script as Argo CD does and return (hs.status, hs.message)."""
    lua = lupa.LuaRuntime(register_eval=False, register_builtins=False)
    lua.globals().obj = _to_lua(lua, obj)
    hs = lua.execute(SCRIPT.read_text(encoding="utf-8"))
    assert hs is not None, "the script must return hs"
    return hs["status"], hs["message"]


def _condition(obj: dict, type_: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def _fixtures() -> list[pathlib.Path]:
    return sorted(FIXTURES.glob("*.yaml"))


def test_fixtures_cover_every_health_status():
    prefixes = {path.name.split("-", 1)[0] for path in _fixtures()}
    assert prefixes == set(EXPECTED_BY_PREFIX), f"fixture names must start with one of {sorted(EXPECTED_BY_PREFIX)}"


@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: p.stem)
def test_fixture_health(path: pathlib.Path):
    obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert obj["kind"] == "NeuronInferenceService"
    expected = EXPECTED_BY_PREFIX[path.name.split("-", 1)[0]]

    status, message = health(obj)

    assert status == expected, f"{path.name}: {status} ({message})"
    assert status in ARGO_HEALTH_STATUSES
    assert isinstance(message, str) and message, "Argo CD shows the message in the UI; it must never be empty"


@pytest.mark.parametrize("path", [p for p in _fixtures() if p.name.startswith("degraded-")], ids=lambda p: p.stem)
def test_degraded_message_says_what_to_change(path: pathlib.Path):
    obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    stalled = _condition(obj, "Stalled")
    ready = _condition(obj, "Ready")

    _, message = health(obj)

    expected = stalled["message"] if stalled["status"] == "True" else ready["message"]
    assert message == expected


def test_compiling_reports_the_reconciling_message():
    obj = yaml.safe_load((FIXTURES / "progressing-compiling.yaml").read_text(encoding="utf-8"))

    assert health(obj) == ("Progressing", _condition(obj, "Reconciling")["message"])


def test_stalled_wins_over_ready_while_an_old_artifact_serves():
    obj = yaml.safe_load((FIXTURES / "degraded-recompile-failed-serving-old-artifact.yaml").read_text(encoding="utf-8"))
    assert _condition(obj, "Ready")["status"] == "True"

    assert health(obj)[0] == "Degraded"


def test_stale_status_is_progressing_even_when_ready():
    obj = yaml.safe_load((FIXTURES / "healthy-ready.yaml").read_text(encoding="utf-8"))
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1

    assert health(obj) == ("Progressing", f"Waiting for the operator to observe generation {obj['metadata']['generation']}")


def test_status_without_observed_generation_is_progressing():
    obj = yaml.safe_load((FIXTURES / "healthy-ready.yaml").read_text(encoding="utf-8"))
    del obj["status"]["observedGeneration"]

    assert health(obj)[0] == "Progressing"


@pytest.mark.parametrize(
    "status",
    [
        {"observedGeneration": 1},  # status written, no conditions yet
        {"observedGeneration": 1, "conditions": []},
        {"observedGeneration": 1, "phase": "Pending", "conditions": [{"type": "Ready", "status": "Unknown"}]},
    ],
)
def test_partial_status_is_progressing(status: dict):
    obj = {"apiVersion": "inference.neuron-operator.io/v1alpha1", "kind": "NeuronInferenceService",
           "metadata": {"name": "x", "namespace": "ml", "generation": 1}, "status": status}

    assert health(obj)[0] == "Progressing"


def test_ready_false_without_degraded_phase_is_progressing():
    obj = yaml.safe_load((FIXTURES / "progressing-deploying.yaml").read_text(encoding="utf-8"))
    for condition in obj["status"]["conditions"]:
        if condition["type"] == "Reconciling":
            condition.update(status="False", reason="Reconciled", message="")
    assert obj["status"]["phase"] == "Deploying"

    assert health(obj) == ("Progressing", _condition(obj, "Ready")["message"])


def test_script_has_the_argo_cd_shape():
    text = SCRIPT.read_text(encoding="utf-8")
    assert "hs = {}" in text and text.rstrip().endswith("return hs")
    assert "obj.status" in text
