"""S3 tier fixtures: one real SeaweedFS server per session (127.0.0.1, free ports, temporary data), the standard
AWS environment variables pointing boto3 at it, a fresh bucket per test, and the spec and key of a small artifact."""

from __future__ import annotations

import os
import pathlib
import re
import uuid

import pytest

from neuron_runtime.compile_spec import CompileSpec, compile_key
from neuron_runtime.stacks import NEURON_2_23_VLLM_0_7_2

from . import seaweedfs

SPEC = dict(
    model_uri="hf://meta-llama/Llama-3.1-8B-Instruct", model_revision="main", instance_family="trn1", lnc=1,
    tp_degree=4, world_size=1, max_num_seqs=4, max_model_len=1024, dtype="bfloat16", stack="neuron-2.23-vllm-0.7.2",
)  # fmt: skip
# Variables of a developer's own AWS setup that would otherwise win over ours.
FOREIGN_AWS_VARS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN",
                    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI")

HERE = pathlib.Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    for item in items:
        if pathlib.Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.s3)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The server, with boto3's standard environment (AWS_ENDPOINT_URL, keys, region) set for the session."""
    server = seaweedfs.start(tmp_path_factory.mktemp("seaweedfs"))
    saved = {k: os.environ.get(k) for k in (*server.aws_env(), *FOREIGN_AWS_VARS)}
    for name in FOREIGN_AWS_VARS:
        os.environ.pop(name, None)
    os.environ.update(server.aws_env())
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def s3(s3_server):
    return s3_server.client()


@pytest.fixture
def bucket(s3, request):
    name = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{name}-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def profile():
    return NEURON_2_23_VLLM_0_7_2


@pytest.fixture
def spec() -> CompileSpec:
    return CompileSpec.from_dict(SPEC)


@pytest.fixture
def key(spec) -> str:
    return compile_key(spec)
