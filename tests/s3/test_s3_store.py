"""The S3 artifact store against a real S3 server: publish and fetch, concurrent publishers of one key, an upload
killed half-way, and the multi-node layout (one publication per rank plus the group manifest)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from neuron_runtime import artifacts, constants, s3_transfer
from neuron_runtime.compile_spec import CompileSpec, compile_key
from neuron_runtime.errors import ArtifactError

from .compile_output import artifact_files, builder, manifest_maker, read_tree, writer_of

MIB = 1 << 20


def open_store(bucket, local_root):
    """A store as the runtime opens it: client from boto3's standard environment (AWS_ENDPOINT_URL, keys)."""
    return artifacts.open_store(f"s3://{bucket}/artifacts", str(local_root))


def publications(client, bucket, key_prefix) -> set:
    """The publication directories under ``key_prefix/`` (names of the first path level that are not files)."""
    rels = [k[len(key_prefix) + 1 :] for k in s3_transfer.list_keys(client, bucket, key_prefix)]
    return {rel.split("/", 1)[0] for rel in rels if "/" in rel}


def test_publish_and_fetch_a_multi_file_artifact(s3, bucket, spec, key, profile, tmp_path):
    files = artifact_files(spec, "only", 3 * MIB)
    store = open_store(bucket, tmp_path / "compile")
    result = store.publish(key, builder(files), manifest_maker(key, spec, "only"), profile)
    assert result == artifacts.PUBLISHED
    # The completion marker sits at <key>/manifest.json and names one publication holding every file.
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"artifacts/{key}/manifest.json")["Body"].read())
    assert manifest["key"] == key and manifest["publisher"] == "only"
    assert manifest["files"] == {rel: len(data) for rel, data in files.items()}
    assert publications(s3, bucket, f"artifacts/{key}") == {manifest["publication"]}
    assert store.lookup(key)["publication"] == manifest["publication"]
    assert store.publish(key, builder({}), manifest_maker(key, spec, "again"), profile) == artifacts.CACHE_HIT

    dest = open_store(bucket, tmp_path / "serve").fetch(key)
    tree = read_tree(dest)
    assert json.loads(tree.pop(constants.MANIFEST_FILE)) == manifest
    assert tree == files
    assert artifacts.verify_artifact_dir(dest, key, spec, profile)["publisher"] == "only"
    assert os.listdir(tmp_path / "serve" / constants.STAGING_DIR) == []
    assert os.listdir(tmp_path / "compile" / constants.STAGING_DIR) == []


def test_two_concurrent_publishers_one_wins_and_readers_never_see_a_mix(s3_server, bucket, spec, key, profile,
                                                                        tmp_path):
    # Different bytes per publisher (as two real compiles of one key may produce), so a mix would be visible.
    contents = {label: artifact_files(spec, label, 4 * MIB) for label in ("red", "blue")}
    results = {}
    start = threading.Barrier(2)
    stop_reading = threading.Event()
    seen = []
    problems = []

    def publish(label):
        store = artifacts.S3Store(f"s3://{bucket}/artifacts", s3_server.client(), str(tmp_path / label))
        start.wait()
        results[label] = store.publish(key, builder(contents[label]), manifest_maker(key, spec, label), profile)

    def read():
        # A serving pod polling the store: whenever it sees the completion marker, what it fetches must be one
        # publisher's complete output, the one that manifest names.
        n = 0
        while not stop_reading.is_set():
            n += 1
            store = artifacts.S3Store(f"s3://{bucket}/artifacts", s3_server.client(), str(tmp_path / f"read{n}"))
            try:
                if store.lookup(key) is None:
                    continue
                tree = read_tree(store.fetch(key))
            except Exception as e:  # reported by the test thread below
                problems.append(repr(e))
                continue
            manifest = json.loads(tree.pop(constants.MANIFEST_FILE))
            writers = {writer_of(data) for rel, data in tree.items() if rel != "neuron_config.json"}
            if tree != contents[manifest["publisher"]] or writers != {manifest["publisher"]}:
                problems.append((manifest["publisher"], sorted(writers)))
            seen.append(manifest["publisher"])

    threads = [threading.Thread(target=publish, args=(label,)) for label in contents]
    reader = threading.Thread(target=read)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    time.sleep(0.5)  # let the reader see the final state too
    stop_reading.set()
    reader.join(timeout=60)

    assert sorted(results.values()) == [artifacts.ALREADY_PUBLISHED, artifacts.PUBLISHED]
    winner = next(label for label, result in results.items() if result == artifacts.PUBLISHED)
    assert problems == []
    assert seen and set(seen) == {winner}  # the marker, once visible, never changes
    final = open_store(bucket, tmp_path / "final")
    assert read_tree(final.fetch(key)).items() >= contents[winner].items()
    # The loser removed its own files: one publication is left, the winner's.
    assert publications(s3_server.client(), bucket, f"artifacts/{key}") == {final.lookup(key)["publication"]}


UPLOADER = textwrap.dedent(
    """
    import sys
    from neuron_runtime import artifacts
    from tests.s3.compile_output import artifact_files, builder, manifest_maker
    from neuron_runtime.compile_spec import CompileSpec
    from neuron_runtime.stacks import NEURON_2_23_VLLM_0_7_2
    spec = CompileSpec.from_dict(__import__("json").loads(sys.argv[3]))
    store = artifacts.open_store(sys.argv[1], sys.argv[2])
    files = artifact_files(spec, "killed", 4 << 20)
    # More files than upload workers, so the upload runs in several waves and the kill lands between them.
    files.update({f"weights/extra-{i:02d}.bin": bytes([i]) * (4 << 20) for i in range(40)})
    store.publish(sys.argv[4], builder(files), manifest_maker(sys.argv[4], spec, "killed"), NEURON_2_23_VLLM_0_7_2)
    """
)


def test_an_interrupted_upload_never_looks_complete(s3, bucket, spec, key, profile, tmp_path):
    from .conftest import SPEC

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, f"s3://{bucket}/artifacts", str(tmp_path / "killed"), json.dumps(SPEC), key],
        cwd=root, env={**os.environ, "PYTHONPATH": root},
    )
    deadline = time.monotonic() + 60
    try:
        while not list(s3_transfer.list_keys(s3, bucket, f"artifacts/{key}")):  # the first objects are landing
            assert proc.poll() is None, "the uploader finished or failed before any object appeared"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    landed = list(s3_transfer.list_keys(s3, bucket, f"artifacts/{key}"))
    assert 0 < len(landed) < 45  # part of the 45 files is there...
    store = open_store(bucket, tmp_path / "serve")
    assert store.lookup(key) is None  # ...but no marker, so it is not an artifact
    with pytest.raises(ArtifactError, match=f"not found at s3://{bucket}/artifacts/{key}/"):
        store.fetch(key)

    # The compile Job's retry publishes normally; readers get its files, never the killed upload's.
    files = artifact_files(spec, "retry", MIB)
    assert open_store(bucket, tmp_path / "retry").publish(
        key, builder(files), manifest_maker(key, spec, "retry"), profile
    ) == artifacts.PUBLISHED
    tree = read_tree(open_store(bucket, tmp_path / "serve2").fetch(key))
    tree.pop(constants.MANIFEST_FILE)
    assert tree == files


def test_multi_node_ranks_publish_separately_and_a_node_fetches_only_its_own(s3, bucket, spec, profile, tmp_path):
    from .conftest import SPEC

    group_spec = CompileSpec.from_dict({**SPEC, "tp_degree": 4, "world_size": 2})
    key = compile_key(group_spec)
    store = open_store(bucket, tmp_path / "compile")
    rank_files = {}
    for rank in (1, 0):
        local = 2
        kwargs = {"tp_degree": 4, "batch_size": 4, "seq_len": 1024, "world_size": 4, "local_ranks_size": local,
                  "start_rank_id": rank * local, "save_sharded_checkpoint": True}
        files = {
            "neuron_config.json": json.dumps({"neuron_config": {k: v for k, v in kwargs.items()
                                                                if k != "save_sharded_checkpoint"}}).encode(),
            "model.pt": f"rank {rank} traced".encode(),
            **{f"weights/tp{r}_sharded_checkpoint.safetensors": os.urandom(MIB)
               for r in range(rank * local, rank * local + local)},
        }
        rank_files[rank] = files
        manifest = artifacts.build_rank_manifest(key, group_spec, {"vllm": "x"}, kwargs, rank)
        assert store.publish_rank(key, rank, builder(files), lambda m=manifest: m, profile) == artifacts.PUBLISHED
        assert store.lookup(key) is None  # no group manifest until rank 0 writes it
    rank_manifests = {r: store.lookup_rank(key, r) for r in (0, 1)}
    store.publish_group(key, artifacts.build_group_manifest(key, group_spec, rank_manifests))
    store.publish_group(key, {"key": key, "overwritten": True})  # a retry of rank 0 leaves the first one
    assert "overwritten" not in store.lookup(key)

    node1 = open_store(bucket, tmp_path / "node1")
    rank1 = node1.fetch_rank(key, 1)
    assert not os.path.exists(tmp_path / "node1" / key / "rank-0")  # a node downloads only its own slice
    artifacts.verify_group_manifest(os.path.dirname(rank1), key, group_spec)
    assert artifacts.verify_artifact_dir(rank1, key, group_spec, profile, rank=1)["rank"] == 1
    tree = read_tree(rank1)
    tree.pop(constants.MANIFEST_FILE)
    assert tree == rank_files[1]
