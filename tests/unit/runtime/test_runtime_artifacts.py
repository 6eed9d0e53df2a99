"""Artifact store: atomic publication (staging -> rename, manifest last), cache hits, races, verification."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from neuron_runtime import artifacts, constants
from neuron_runtime.compile_spec import CompileSpec, compile_key
from neuron_runtime.errors import ArtifactError, CompileError


@pytest.fixture
def spec(make_spec):
    return make_spec(tp_degree=2, max_num_seqs=4, max_model_len=256)


@pytest.fixture
def key(spec):
    return compile_key(spec)


def manifest_fn(key, spec, marker="ours"):
    def make():
        m = artifacts.build_manifest(
            key, spec, {"vllm": "0.7.2+neuron218"}, {"save_sharded_checkpoint": True, "tp_degree": 2}
        )
        m["marker"] = marker
        return m

    return make


def test_publish_compiles_in_staging_then_renames(tmp_path, spec, key, profile, fake_nxdi_output):
    store = artifacts.LocalStore(str(tmp_path))
    final = tmp_path / key
    seen = {}

    def build(staging):
        seen["staging"] = staging
        seen["final_existed_during_build"] = final.exists()
        fake_nxdi_output(staging, 2, 4, 256)

    assert store.publish(key, build, manifest_fn(key, spec), profile) == artifacts.PUBLISHED
    assert os.path.dirname(seen["staging"]) == str(tmp_path / constants.STAGING_DIR)
    assert os.path.basename(seen["staging"]).startswith(key + "-")
    assert seen["final_existed_during_build"] is False
    assert not os.path.exists(seen["staging"])  # renamed, not copied
    assert os.listdir(tmp_path / constants.STAGING_DIR) == []
    manifest = json.loads((final / constants.MANIFEST_FILE).read_text())
    assert manifest["key"] == key and CompileSpec.from_dict(manifest["spec"]) == spec
    assert (final / "model.pt").is_file() and (final / "weights" / "tp1_sharded_checkpoint.safetensors").is_file()
    assert stat.S_IMODE(os.stat(final).st_mode) == 0o755  # readable by serving pods running as another uid


def test_manifest_is_written_after_the_compile_output(tmp_path, spec, key, profile, fake_nxdi_output):
    store = artifacts.LocalStore(str(tmp_path))
    order = []

    def build(staging):
        fake_nxdi_output(staging, 2, 4, 256)
        order.append(("build-done", os.path.exists(os.path.join(staging, constants.MANIFEST_FILE))))

    def make_manifest():
        order.append(("manifest", None))
        return manifest_fn(key, spec)()

    store.publish(key, build, make_manifest, profile)
    assert order == [("build-done", False), ("manifest", None)]


def test_cache_hit_does_not_compile(tmp_path, spec, key, profile, fake_nxdi_output):
    store = artifacts.LocalStore(str(tmp_path))
    store.publish(key, lambda d: fake_nxdi_output(d, 2, 4, 256), manifest_fn(key, spec), profile)

    def must_not_run(_staging):
        raise AssertionError("compiled despite a complete artifact")

    assert store.publish(key, must_not_run, manifest_fn(key, spec), profile) == artifacts.CACHE_HIT


def test_concurrent_winner_keeps_its_artifact(tmp_path, spec, key, profile, fake_nxdi_output):
    store = artifacts.LocalStore(str(tmp_path))

    def build_while_another_job_wins(staging):
        fake_nxdi_output(staging, 2, 4, 256)
        # Another compile Job of the same key publishes while we are still compiling.
        other = artifacts.LocalStore(str(tmp_path))
        assert other.publish(key, lambda d: fake_nxdi_output(d, 2, 4, 256), manifest_fn(key, spec, "winner"), profile)

    result = store.publish(key, build_while_another_job_wins, manifest_fn(key, spec, "loser"), profile)
    assert result == artifacts.ALREADY_PUBLISHED
    assert json.loads((tmp_path / key / constants.MANIFEST_FILE).read_text())["marker"] == "winner"
    assert os.listdir(tmp_path / constants.STAGING_DIR) == []  # our copy was discarded


def test_failed_compile_leaves_nothing(tmp_path, spec, key, profile):
    store = artifacts.LocalStore(str(tmp_path))

    def build(staging):
        with open(os.path.join(staging, "neuron_config.json"), "w") as f:
            f.write("{}")  # NxDI writes this before tracing, then dies
        raise RuntimeError("neuronx-cc killed")

    with pytest.raises(RuntimeError):
        store.publish(key, build, manifest_fn(key, spec), profile)
    assert not (tmp_path / key).exists()
    assert os.listdir(tmp_path / constants.STAGING_DIR) == []


def test_output_without_model_is_not_published(tmp_path, spec, key, profile, fake_nxdi_output):
    store = artifacts.LocalStore(str(tmp_path))

    def build(staging):
        fake_nxdi_output(staging, 2, 4, 256)
        os.remove(os.path.join(staging, "model.pt"))

    with pytest.raises(CompileError, match="model.pt"):
        store.publish(key, build, manifest_fn(key, spec), profile)
    assert not (tmp_path / key).exists()


def test_foreign_directory_at_the_key_is_an_error(tmp_path, spec, key, profile, fake_nxdi_output):
    (tmp_path / key).mkdir()
    (tmp_path / key / "junk").write_text("x")
    store = artifacts.LocalStore(str(tmp_path))
    with pytest.raises(CompileError, match="without a valid manifest"):
        store.publish(key, lambda d: fake_nxdi_output(d, 2, 4, 256), manifest_fn(key, spec), profile)


def test_stale_staging_of_the_same_key_is_removed(tmp_path, key):
    staging_root = tmp_path / constants.STAGING_DIR
    old, fresh, other = staging_root / f"{key}-old", staging_root / f"{key}-fresh", staging_root / "otherkey-old"
    for d in (old, fresh, other):
        d.mkdir(parents=True)
    past = time.time() - constants.STALE_STAGING_SECONDS - 60
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    artifacts.remove_stale_staging(str(staging_root), key)
    assert not old.exists()
    assert fresh.exists()  # may belong to a compile still running
    assert other.exists()  # another key's business


# --- verification at serve -----------------------------------------------------------------------------------


@pytest.fixture
def published(tmp_path, spec, key, profile, fake_nxdi_output):
    store = artifacts.LocalStore(str(tmp_path / "store"))
    store.publish(key, lambda d: fake_nxdi_output(d, 2, 4, 256), manifest_fn(key, spec), profile)
    return tmp_path / "store" / key


def test_verify_accepts_a_complete_artifact(published, spec, key, profile):
    assert artifacts.verify_artifact_dir(str(published), key, spec, profile)["key"] == key


def test_verify_missing_dir(tmp_path, spec, key, profile):
    with pytest.raises(ArtifactError, match=f"compiled artifacts for key {key} not found at .*compile Job must finish"):
        artifacts.verify_artifact_dir(str(tmp_path / "nope"), key, spec, profile)


def test_verify_missing_manifest(published, spec, key, profile):
    os.remove(published / constants.MANIFEST_FILE)
    with pytest.raises(ArtifactError, match="compile incomplete"):
        artifacts.verify_artifact_dir(str(published), key, spec, profile)


def test_verify_wrong_key(published, spec, key, profile):
    manifest = json.loads((published / constants.MANIFEST_FILE).read_text())
    manifest["key"] = "0" * 20
    (published / constants.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="are for key '00000000000000000000'"):
        artifacts.verify_artifact_dir(str(published), key, spec, profile)


@pytest.mark.parametrize("missing", ["model.pt", "neuron_config.json", "weights/tp1_sharded_checkpoint.safetensors"])
def test_verify_missing_nxdi_file(published, spec, key, profile, missing):
    os.remove(published / missing)
    with pytest.raises(ArtifactError, match="incomplete"):
        artifacts.verify_artifact_dir(str(published), key, spec, profile)


def test_verify_compiled_shapes_must_match_spec(published, make_spec, key, profile):
    (published / "neuron_config.json").write_text(
        json.dumps({"neuron_config": {"tp_degree": 2, "batch_size": 1, "seq_len": 256}})
    )
    spec = make_spec(tp_degree=2, max_num_seqs=4, max_model_len=256)
    with pytest.raises(ArtifactError, match="batch_size compiled 1 vs spec 4"):
        artifacts.verify_artifact_dir(str(published), key, spec, profile)


# --- S3 ------------------------------------------------------------------------------------------------------


def test_s3_publish_uploads_manifest_last(tmp_path, fake_s3, spec, key, profile, fake_nxdi_output):
    store = artifacts.S3Store("s3://bucket/prefix", fake_s3, str(tmp_path / "local"))
    assert (
        store.publish(key, lambda d: fake_nxdi_output(d, 2, 4, 256), manifest_fn(key, spec), profile)
        == artifacts.PUBLISHED
    )
    assert fake_s3.uploads[-1] == f"prefix/{key}/{constants.MANIFEST_FILE}"
    publication = store.lookup(key)["publication"]  # the files go under a prefix of this publication's own
    assert f"prefix/{key}/{publication}/model.pt" in fake_s3.uploads
    assert f"prefix/{key}/{publication}/weights/tp0_sharded_checkpoint.safetensors" in fake_s3.uploads
    assert os.listdir(tmp_path / "local" / constants.STAGING_DIR) == []  # local staging cleaned up
    assert store.lookup(key)["key"] == key
    assert (
        store.publish(key, lambda d: pytest.fail("recompiled"), manifest_fn(key, spec), profile) == artifacts.CACHE_HIT
    )


def test_s3_objects_without_manifest_are_not_an_artifact(tmp_path, fake_s3, key):
    fake_s3.objects[("bucket", f"prefix/{key}/model.pt")] = b"partial upload"
    store = artifacts.S3Store("s3://bucket/prefix", fake_s3, str(tmp_path))
    assert store.lookup(key) is None
    with pytest.raises(ArtifactError, match=f"not found at s3://bucket/prefix/{key}/"):
        store.fetch(key)


def test_s3_fetch_downloads_and_reuses(tmp_path, fake_s3, spec, key, profile, fake_nxdi_output):
    store = artifacts.S3Store("s3://bucket/prefix", fake_s3, str(tmp_path / "local"))
    store.publish(key, lambda d: fake_nxdi_output(d, 2, 4, 256), manifest_fn(key, spec), profile)
    dest = store.fetch(key)
    assert dest == str(tmp_path / "local" / key)
    artifacts.verify_artifact_dir(dest, key, spec, profile)
    fake_s3.objects.clear()  # a second start (pod restart with the same emptyDir) must not download again
    assert store.fetch(key) == dest


def test_s3_listing_pages(fake_s3):
    from neuron_runtime import s3_transfer

    for i in range(2500):
        fake_s3.objects[("b", f"p/k/f{i:04d}")] = b""
    assert len(list(s3_transfer.list_keys(fake_s3, "b", "p/k"))) == 2500
