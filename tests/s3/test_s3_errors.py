"""What a user sees when S3 refuses: one line naming the bucket, the endpoint and what to check, as a
RuntimeFailure (so the CLI writes it as the pod's termination message), never a botocore traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from neuron_runtime import artifacts, constants, model_source, s3_transfer
from neuron_runtime.errors import ModelSourceError, RuntimeFailure

from .conftest import SPEC
from .seaweedfs import free_ports


def assert_clear(error: BaseException, *expected: str) -> None:
    message = str(error)
    assert isinstance(error, RuntimeFailure) and "\n" not in message
    assert "botocore" not in message and "Traceback" not in message
    for text in expected:
        assert text in message, message


def test_wrong_secret_key(s3_server, bucket, key, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = artifacts.open_store(f"s3://{bucket}/artifacts", str(tmp_path))
    with pytest.raises(s3_transfer.S3AccessError) as failure:
        store.lookup(key)
    assert_clear(failure.value, s3_server.endpoint, f"s3://{bucket}/artifacts/{key}/manifest.json",
                 "SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY")
    with pytest.raises(s3_transfer.S3AccessError, match="rejected the credentials"):
        store.fetch(key)


def test_unknown_access_key_on_upload(s3_server, bucket, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(os.urandom(9 << 20))  # multipart: boto3 wraps the error itself
    client = s3_server.client(access_key="nobody", secret_key="nothing")
    with pytest.raises(s3_transfer.S3AccessError) as failure:
        s3_transfer.upload_dir(client, str(tmp_path / "src"), bucket, "p")
    assert_clear(failure.value, s3_server.endpoint, f"s3://{bucket}/p/big.bin", "InvalidAccessKeyId",
                 "AWS_ACCESS_KEY_ID")


def test_missing_bucket(s3_server, tmp_path):
    store = artifacts.open_store("s3://no-such-bucket-here/artifacts", str(tmp_path))
    with pytest.raises(s3_transfer.S3AccessError) as failure:
        store.lookup("0123abcd")
    assert_clear(failure.value, "bucket no-such-bucket-here does not exist", s3_server.endpoint)


def test_unreachable_endpoint(s3_server, bucket, tmp_path, monkeypatch):
    (nothing_listens,) = free_ports(1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{nothing_listens}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # boto3's standard setting: fail fast instead of retrying
    store = artifacts.open_store(f"s3://{bucket}/artifacts", str(tmp_path))
    with pytest.raises(s3_transfer.S3AccessError) as failure:
        store.lookup("0123abcd")
    assert_clear(failure.value, f"cannot reach the S3 endpoint http://127.0.0.1:{nothing_listens}", "AWS_ENDPOINT_URL")


def test_model_source_with_wrong_credentials(s3_server, bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    env = {constants.ENV_MODEL_CACHE: str(tmp_path / "cache")}
    with pytest.raises(ModelSourceError) as failure:
        model_source.materialize(f"s3://{bucket}/models/llama", None, include_weights=False, env=env)
    assert_clear(failure.value, f"downloading s3://{bucket}/models/llama failed", "rejected the credentials",
                 s3_server.endpoint)


def test_serve_reports_wrong_credentials_as_its_termination_message(s3_server, bucket, key, tmp_path):
    env = {
        **os.environ,
        "AWS_SECRET_ACCESS_KEY": "not-the-secret",
        constants.ENV_COMPILE_SPEC: json.dumps(SPEC),
        constants.ENV_ARTIFACT_KEY: key,
        constants.ENV_ARTIFACT_STORE: f"s3://{bucket}/artifacts",
        constants.ENV_TERMINATION_LOG: str(tmp_path / "termination-log"),
        constants.ENV_MODEL_CACHE: str(tmp_path / "models"),
        constants.ENV_LOCAL_ARTIFACTS: str(tmp_path / "local-artifacts"),
        constants.ENV_SKIP_STACK_CHECK: "1",
        constants.ENV_SERVE_CONFIG: json.dumps({"port": 8000}),
    }
    result = subprocess.run([sys.executable, "-m", "neuron_runtime.cli", "serve"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == constants.EXIT_FAILURE, result.stderr
    message = (tmp_path / "termination-log").read_text()
    assert "rejected the credentials" in message and s3_server.endpoint in message and bucket in message
    assert "Traceback" not in result.stderr
