"""s3:// model sources against a real S3 server: which files are downloaded for compiling and for serving."""

from __future__ import annotations

import pytest

from neuron_runtime import constants, model_source
from neuron_runtime.errors import ModelSourceError

MODEL = {
    "config.json": b'{"model_type": "llama"}',
    "tokenizer.json": b"{}",
    "tokenizer_config.json": b"{}",
    "model.safetensors.index.json": b"{}",
    "model-00001-of-00002.safetensors": b"w1" * 1000,
    "model-00002-of-00002.safetensors": b"w2" * 1000,
    "pytorch_model.bin": b"pickled duplicate",  # never read by NxDI when safetensors exist
    "original/consolidated.00.pth": b"meta checkpoint",  # Meta's own format, never read by NxDI
}


@pytest.fixture
def model_uri(s3, bucket):
    for name, data in MODEL.items():
        s3.put_object(Bucket=bucket, Key=f"models/tiny-llama/{name}", Body=data)
    return f"s3://{bucket}/models/tiny-llama"


def local_files(path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_serving_downloads_config_and_tokenizer_only(model_uri, bucket, tmp_path):
    env = {constants.ENV_MODEL_CACHE: str(tmp_path / "cache")}
    path = model_source.materialize(model_uri, None, include_weights=False, env=env)
    assert path == model_source.local_model_path(model_uri, model_cache=str(tmp_path / "cache"))
    assert local_files(tmp_path / "cache" / "s3" / bucket / "models" / "tiny-llama") == {
        n: MODEL[n] for n in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json")
    }


def test_compiling_downloads_safetensors_but_no_duplicates(model_uri, tmp_path):
    env = {constants.ENV_MODEL_CACHE: str(tmp_path / "cache")}
    path = model_source.materialize(model_uri, None, include_weights=True, env=env)
    from pathlib import Path

    assert local_files(Path(path)) == {n: d for n, d in MODEL.items() if not n.endswith((".bin", ".pth"))}


def test_an_empty_prefix_is_reported(bucket, tmp_path):
    env = {constants.ENV_MODEL_CACHE: str(tmp_path / "cache")}
    with pytest.raises(ModelSourceError, match=f"no files found under s3://{bucket}/models/missing"):
        model_source.materialize(f"s3://{bucket}/models/missing", None, include_weights=False, env=env)
