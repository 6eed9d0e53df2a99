"""Fixtures for the runtime's unit tests: specs, contract environments, fake artifacts. No Neuron stack needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from neuron_runtime import constants
from neuron_runtime.compile_spec import CompileSpec, compile_key
from neuron_runtime.stacks import NEURON_2_23_VLLM_0_7_2

BASE_SPEC = dict(
    model_uri="hf://meta-llama/Llama-3.1-8B-Instruct",
    model_revision="main",
    instance_family="trn1",
    lnc=1,
    tp_degree=32,
    world_size=1,
    max_num_seqs=8,
    max_model_len=4096,
    dtype="bfloat16",
    stack="neuron-2.23-vllm-0.7.2",
)


@pytest.fixture
def profile():
    return NEURON_2_23_VLLM_0_7_2


@pytest.fixture
def make_spec():
    def make(**changes) -> CompileSpec:
        data = dict(BASE_SPEC)
        data.update(changes)
        return CompileSpec.from_dict(data)

    return make


@pytest.fixture
def contract_env(tmp_path):
    """Build the env the operator would set for ``spec``; the termination log goes to tmp_path."""

    def make(spec: CompileSpec, store, **extra) -> dict:
        env = {
            constants.ENV_COMPILE_SPEC: spec.to_json(),
            constants.ENV_ARTIFACT_KEY: compile_key(spec),
            constants.ENV_ARTIFACT_STORE: str(store),
            constants.ENV_TERMINATION_LOG: str(tmp_path / "termination-log"),
            constants.ENV_MODEL_CACHE: str(tmp_path / "models"),
            constants.ENV_LOCAL_ARTIFACTS: str(tmp_path / "local-artifacts"),
            constants.ENV_SKIP_STACK_CHECK: "1",
        }
        env.update({k: str(v) for k, v in extra.items()})
        return env

    return make


@pytest.fixture
def termination_log(tmp_path) -> Path:
    return tmp_path / "termination-log"


def write_fake_nxdi_output(directory, tp_degree: int, batch_size: int, seq_len: int, sharded: bool = True) -> None:
    """What NxDI compile() leaves in a directory: neuron_config.json, model.pt, weights/ (tiny stand-ins)."""
    os.makedirs(directory, exist_ok=True)
    config = {"neuron_config": {"tp_degree": tp_degree, "batch_size": batch_size, "seq_len": seq_len}}
    with open(os.path.join(directory, "neuron_config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(directory, "model.pt"), "wb") as f:
        f.write(b"traced")
    if sharded:
        os.makedirs(os.path.join(directory, "weights"), exist_ok=True)
        for rank in range(tp_degree):
            with open(os.path.join(directory, "weights", f"tp{rank}_sharded_checkpoint.safetensors"), "wb") as f:
                f.write(b"w")


@pytest.fixture
def fake_nxdi_output():
    return write_fake_nxdi_output


class FakeS3Client:
    """In-memory stand-in for the boto3 S3 calls s3_transfer uses; records the order of uploads."""

    def __init__(self) -> None:
        self.objects: dict = {}  # (bucket, key) -> bytes
        self.uploads: list = []  # keys in upload order

    def list_objects_v2(self, Bucket, Prefix="", MaxKeys=1000, ContinuationToken=None):
        keys = sorted(k for (b, k) in self.objects if b == Bucket and k.startswith(Prefix))
        start = int(ContinuationToken or 0)
        page = keys[start : start + MaxKeys]
        result = {"Contents": [{"Key": k} for k in page], "IsTruncated": start + MaxKeys < len(keys)}
        if result["IsTruncated"]:
            result["NextContinuationToken"] = str(start + MaxKeys)
        return result

    def upload_file(self, Filename, Bucket, Key):
        with open(Filename, "rb") as f:
            self.objects[(Bucket, Key)] = f.read()
        self.uploads.append(Key)

    def download_file(self, Bucket, Key, Filename):
        with open(Filename, "wb") as f:
            f.write(self.objects[(Bucket, Key)])

    def get_object(self, Bucket, Key):
        import io

        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}

    def put_object(self, Bucket, Key, Body, IfNoneMatch=None):
        if IfNoneMatch == "*" and (Bucket, Key) in self.objects:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "exists"}}, "PutObject")
        self.objects[(Bucket, Key)] = Body
        self.uploads.append(Key)

    def delete_objects(self, Bucket, Delete):
        for obj in Delete["Objects"]:
            self.objects.pop((Bucket, obj["Key"]), None)
        return {}


@pytest.fixture
def fake_s3():
    return FakeS3Client()


def multi_node_kwargs(spec: CompileSpec, rank: int) -> dict:
    """The NeuronConfig placement keys a rank's artifact carries (what compile writes for that rank)."""
    local = spec.tp_degree // spec.world_size
    return {
        "tp_degree": spec.tp_degree,
        "batch_size": spec.max_num_seqs,
        "seq_len": spec.max_model_len,
        "world_size": spec.tp_degree,
        "local_ranks_size": local,
        "start_rank_id": rank * local,
        "save_sharded_checkpoint": True,
    }


def write_fake_rank_artifact(key_dir, spec: CompileSpec, rank: int, versions=None) -> str:
    """What a multi-node compile pod publishes for ``rank``: NxDI output with that rank's weights + rank manifest."""
    from neuron_runtime import artifacts

    kwargs = multi_node_kwargs(spec, rank)
    directory = os.path.join(str(key_dir), artifacts.rank_dir_name(rank))
    os.makedirs(os.path.join(directory, "weights"), exist_ok=True)
    with open(os.path.join(directory, "neuron_config.json"), "w") as f:
        json.dump({"neuron_config": {k: v for k, v in kwargs.items() if k != "save_sharded_checkpoint"}}, f)
    with open(os.path.join(directory, "model.pt"), "wb") as f:
        f.write(b"traced")
    start, local = kwargs["start_rank_id"], kwargs["local_ranks_size"]
    for r in range(start, start + local):
        with open(os.path.join(directory, "weights", f"tp{r}_sharded_checkpoint.safetensors"), "wb") as f:
            f.write(b"w")
    key = compile_key(spec)
    artifacts.write_manifest(directory, artifacts.build_rank_manifest(key, spec, versions or {}, kwargs, rank))
    return directory


def write_fake_group_artifacts(store, spec: CompileSpec) -> str:
    """A complete multi-node artifact in a local store: every rank dir plus rank 0's group manifest."""
    from neuron_runtime import artifacts

    key = compile_key(spec)
    key_dir = os.path.join(str(store), key)
    manifests = {}
    for rank in range(spec.world_size):
        write_fake_rank_artifact(key_dir, spec, rank)
        manifests[rank] = artifacts.read_manifest(os.path.join(key_dir, artifacts.rank_dir_name(rank)))
    artifacts.write_manifest(key_dir, artifacts.build_group_manifest(key, spec, manifests))
    return key_dir
