"""Model URIs: deterministic local paths (compile and serve must agree), validation, local materialisation."""

from __future__ import annotations

import pytest

from neuron_runtime import model_source
from neuron_runtime.errors import ModelSourceError, SpecError
from neuron_runtime.model_source import display_name, local_model_path, parse_model_uri


@pytest.mark.parametrize(
    "uri, revision, expected",
    [
        ("hf://meta-llama/Llama-3.1-8B", "main", "/c/hf/meta-llama/Llama-3.1-8B/main"),
        ("hf://meta-llama/Llama-3.1-8B", None, "/c/hf/meta-llama/Llama-3.1-8B/main"),
        ("hf://meta-llama/Llama-3.1-8B@abc123", None, "/c/hf/meta-llama/Llama-3.1-8B/abc123"),
        ("hf://org/m", "refs/pr/1", "/c/hf/org/m/refs--pr--1"),
        ("hf://gpt2", None, "/c/hf/gpt2/main"),
        ("s3://bucket/models/llama/", None, "/c/s3/bucket/models/llama"),
        ("pvc://models/llama/8b", None, "/var/lib/neuron-operator/models/models/llama/8b"),
        ("pvc://models", None, "/var/lib/neuron-operator/models/models"),
        ("/data/llama/", None, "/data/llama"),
    ],
)
def test_local_paths(uri, revision, expected):
    assert local_model_path(uri, revision, model_cache="/c") == expected


@pytest.mark.parametrize(
    "uri",
    ["llama", "http://x/y", "hf://a/b/c", "hf://", "pvc://Bad_Claim/x", "pvc://c/../etc", "s3://", "hf://a/../b"],
)
def test_invalid_uris(uri):
    with pytest.raises(SpecError):
        parse_model_uri(uri)


def test_revision_conflict():
    with pytest.raises(SpecError, match="pins revision"):
        parse_model_uri("hf://org/m@v1", "v2")
    assert parse_model_uri("hf://org/m@v1", "v1").revision == "v1"


def test_display_names():
    assert display_name("hf://meta-llama/Llama-3.1-8B@main") == "meta-llama/Llama-3.1-8B"
    assert display_name("pvc://models/llama/8b") == "8b"
    assert display_name("s3://bucket/llama/") == "llama"


def test_download_patterns():
    both = ["config.json", "model.safetensors", "pytorch_model.bin", "original/consolidated.00.pth"]
    assert set(model_source.ignore_patterns(both, include_weights=False)) >= {"*.safetensors", "*.bin", "original/*"}
    with_weights = model_source.ignore_patterns(both, include_weights=True)
    assert "*.safetensors" not in with_weights and "*.bin" in with_weights  # safetensors win, as in NxDI
    assert model_source.ignore_patterns(["config.json", "pytorch_model.bin"], include_weights=True) == ("original/*",)


def test_materialize_local_and_missing(tmp_path):
    assert model_source.materialize(str(tmp_path), None, include_weights=True, env={}) == str(tmp_path)
    with pytest.raises(ModelSourceError, match="is the claim mounted"):
        model_source.materialize("pvc://claim/m", None, include_weights=True, env={}, pvc_root=str(tmp_path))


def test_materialize_s3_skips_weights(tmp_path, fake_s3, monkeypatch):
    for name in ("config.json", "tokenizer.json", "model-00001.safetensors", "pytorch_model.bin", "original/c.pth"):
        fake_s3.objects[("bucket", f"llama/{name}")] = b"x"
    monkeypatch.setattr(model_source.s3_transfer, "make_client", lambda: fake_s3)
    env = {"NEURON_RUNTIME_MODEL_CACHE": str(tmp_path)}
    path = model_source.materialize("s3://bucket/llama", None, include_weights=False, env=env)
    assert path == str(tmp_path / "s3" / "bucket" / "llama")
    assert sorted(p.name for p in (tmp_path / "s3" / "bucket" / "llama").iterdir()) == ["config.json", "tokenizer.json"]
    model_source.materialize("s3://bucket/llama", None, include_weights=True, env=env)
    assert sorted(p.name for p in (tmp_path / "s3" / "bucket" / "llama").iterdir()) == [
        "config.json",
        "model-00001.safetensors",
        "tokenizer.json",
    ]


def test_materialize_hf_uses_token_revision_and_patterns(tmp_path, monkeypatch):
    import sys
    import types

    calls = {}
    fake = types.ModuleType("huggingface_hub")
    fake.list_repo_files = lambda repo, revision=None, token=None: ["config.json", "model.safetensors", "model.bin"]

    def snapshot_download(**kwargs):
        calls.update(kwargs)

    fake.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    env = {"NEURON_RUNTIME_MODEL_CACHE": str(tmp_path), "HF_TOKEN": "hf_secret"}
    path = model_source.materialize("hf://meta-llama/Llama-3.1-8B", "v1", include_weights=True, env=env)
    assert path == str(tmp_path / "hf" / "meta-llama" / "Llama-3.1-8B" / "v1")
    assert calls == {
        "repo_id": "meta-llama/Llama-3.1-8B",
        "revision": "v1",
        "local_dir": path,
        "token": "hf_secret",
        "ignore_patterns": ["original/*", "*.bin", "*.pt", "*.pth"],
    }

    def failing(**kwargs):
        raise OSError("401 Unauthorized")

    fake.snapshot_download = failing
    with pytest.raises(ModelSourceError, match="401 Unauthorized"):
        model_source.materialize("hf://meta-llama/Llama-3.1-8B", "v1", include_weights=True, env=env)
