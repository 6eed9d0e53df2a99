"""The compiled-artifact store: ``<store>/<key>/`` holding NxDI's output plus our manifest.json.

Publication is atomic so a serving pod never sees half an artifact:
  local store: compile into ``<store>/.staging/<key>-<random>/``, write manifest.json last, then ``os.rename`` into
  ``<store>/<key>`` (if another compile of the same key won the race, ours is discarded and we succeed);
  S3 store: compile into a local staging dir, upload every file, then manifest.json last (its presence = complete).
A manifest with the right key is the only completion marker: NxDI itself writes neuron_config.json before tracing
and so leaves partial directories behind (NX3 models/application_base.py compile()).

Multi-node (world_size > 1), one compile pod per node (Indexed Job):
  ``<store>/<key>/rank-<r>/`` is node r's own, self-contained NxDI output (neuron_config.json, model.pt and the
  pre-sharded weights of ranks r*L .. r*L+L-1, L = local ranks per node) plus a rank manifest, published exactly like
  a single-node artifact (staging dir, manifest last, rename / upload). ``<store>/<key>/manifest.json`` is the
  *group* manifest: rank 0 writes it once every rank is published, so "the key is complete" means the same thing
  for one node and for many. Serving node r points NEURON_COMPILED_ARTIFACTS at its rank dir only.
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, Mapping, Optional

from neuron_runtime import __version__, constants, s3_transfer
from neuron_runtime.compile_spec import CompileSpec
from neuron_runtime.errors import ArtifactError, CompileError
from neuron_runtime.stacks import ENGINE_VLLM_NEURON, NxdiStackProfile, Stack

log = logging.getLogger(__name__)

CACHE_HIT = "cache-hit"  # a complete artifact for the key was already there; nothing compiled
PUBLISHED = "published"  # our compile output is now the artifact
ALREADY_PUBLISHED = "already-published"  # a concurrent compile published first; ours was discarded

BuildFn = Callable[[str], None]  # writes NxDI output into the given (staging) directory


def build_manifest(
    key: str,
    spec: CompileSpec,
    versions: Mapping[str, Optional[str]],
    neuron_config_kwargs: Mapping[str, Any],
    created: Optional[datetime.datetime] = None,
) -> Dict[str, Any]:
    created = created or datetime.datetime.now(datetime.timezone.utc)
    return {
        "schema": constants.MANIFEST_SCHEMA_VERSION,
        "key": key,
        "stack": spec.stack,
        "spec": spec.to_dict(),
        "neuron_config": dict(neuron_config_kwargs),
        "versions": dict(versions),
        "runtime_version": __version__,
        "created": created.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def rank_dir_name(rank: int) -> str:
    return constants.RANK_DIR_FORMAT.format(rank=rank)


def build_rank_manifest(
    key: str,
    spec: CompileSpec,
    versions: Mapping[str, Optional[str]],
    neuron_config_kwargs: Mapping[str, Any],
    rank: int,
    created: Optional[datetime.datetime] = None,
) -> Dict[str, Any]:
    manifest = build_manifest(key, spec, versions, neuron_config_kwargs, created)
    manifest["rank"] = rank
    manifest["world_size"] = spec.world_size
    return manifest


def build_group_manifest(
    key: str, spec: CompileSpec, rank_manifests: Mapping[int, Mapping[str, Any]], created=None
) -> Dict[str, Any]:
    """The group manifest from the published rank manifests; refuses ranks built by different software."""
    ranks = sorted(rank_manifests)
    if ranks != list(range(spec.world_size)):
        raise CompileError(f"group manifest for key {key} needs ranks 0..{spec.world_size - 1}, have {ranks}")
    versions = {r: rank_manifests[r].get("versions") for r in ranks}
    if any(v != versions[0] for v in versions.values()):
        raise CompileError(f"ranks of key {key} were compiled by different software versions: {versions}")
    created = created or datetime.datetime.now(datetime.timezone.utc)
    return {
        "schema": constants.MANIFEST_SCHEMA_VERSION,
        "key": key,
        "stack": spec.stack,
        "spec": spec.to_dict(),
        "world_size": spec.world_size,
        "layout": "per-rank",
        "ranks": [
            {
                "rank": r,
                "dir": rank_dir_name(r),
                "start_rank_id": (rank_manifests[r].get("neuron_config") or {}).get("start_rank_id"),
                "local_ranks_size": (rank_manifests[r].get("neuron_config") or {}).get("local_ranks_size"),
            }
            for r in ranks
        ],
        "versions": versions[0],
        "runtime_version": __version__,
        "created": created.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def write_manifest(directory: str, manifest: Mapping[str, Any]) -> None:
    """Write via a temp file + fsync + rename, so the manifest itself is never seen half-written."""
    tmp = os.path.join(directory, constants.MANIFEST_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(directory, constants.MANIFEST_FILE))


def parse_manifest(text: str) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def read_manifest(directory: str) -> Optional[Dict[str, Any]]:
    """The manifest of ``directory``, or None when absent or unreadable (both mean "not complete")."""
    try:
        with open(os.path.join(directory, constants.MANIFEST_FILE), encoding="utf-8") as f:
            return parse_manifest(f.read())
    except OSError:
        return None


def missing_files(directory: str, profile: NxdiStackProfile, neuron_config: Mapping[str, Any]) -> list:
    """NxDI files a loadable artifact needs that ``directory`` lacks."""
    required = [profile.neuron_config_file, profile.compiled_model_file]
    if neuron_config.get("save_sharded_checkpoint"):
        # One pre-sharded checkpoint per rank this node loads (NX3 application_base.load_weights: start_rank_id ..
        # start_rank_id + local_ranks_size - 1); single node: every rank, world_size = tp_degree.
        if neuron_config.get("local_ranks_size"):
            start = neuron_config.get("start_rank_id") or 0
            ranks = range(start, start + neuron_config["local_ranks_size"])
        else:
            ranks = range(neuron_config.get("world_size") or neuron_config.get("tp_degree") or 1)
        required += [profile.sharded_weights_file.format(rank=r) for r in ranks]
    return [rel for rel in required if not os.path.isfile(os.path.join(directory, *rel.split("/")))]


def artifact_problems(directory: str, profile: Stack, manifest: Mapping[str, Any]) -> list:
    """What a loadable artifact of ``profile``'s engine needs that ``directory`` lacks (relative paths)."""
    if profile.engine == ENGINE_VLLM_NEURON:
        # The plugin's remote cache: one directory per compiled graph, listed in our manifest when it was published.
        entries = manifest.get("cache_entries") or []
        if not entries:
            return ["any compiled graph (the manifest lists no cache entries)"]
        return [e for e in entries if not os.path.isdir(os.path.join(directory, e))]
    return missing_files(directory, profile, manifest.get("neuron_config") or {})


def verify_group_manifest(key_dir: str, key: str, spec: CompileSpec) -> Dict[str, Any]:
    """Check that ``<store>/<key>/`` carries rank 0's group manifest: every rank of the key was published."""
    manifest = read_manifest(key_dir)
    if manifest is None or manifest.get("key") != key:
        raise ArtifactError(
            f"compiled artifacts for key {key} are not complete at {key_dir} (no group {constants.MANIFEST_FILE}); "
            "the multi-node compile Job must finish first"
        )
    if manifest.get("world_size") != spec.world_size:
        raise ArtifactError(
            f"artifacts at {key_dir} were compiled for {manifest.get('world_size')} nodes, the spec has "
            f"{spec.world_size}"
        )
    return manifest


def verify_artifact_dir(
    directory: str, key: str, spec: CompileSpec, profile: NxdiStackProfile, rank: Optional[int] = None
) -> Dict[str, Any]:
    """Check that ``directory`` holds the complete artifact for ``key`` (for node ``rank`` of a multi-node group
    when given); returns its manifest.

    Replaces vLLM's fallback of recompiling inside the serving pod (F23 NeuronCausalLM.load_weights) with a
    clear failure, so a missing or foreign artifact is reported instead of silently compiled for 15+ minutes.
    """
    not_found = f"compiled artifacts for key {key} not found at {directory}; the compile Job must finish first"
    if not os.path.isdir(directory):
        raise ArtifactError(not_found)
    manifest = read_manifest(directory)
    if manifest is None:
        raise ArtifactError(not_found + f" (no readable {constants.MANIFEST_FILE}: compile incomplete)")
    if manifest.get("key") != key:
        raise ArtifactError(f"artifacts at {directory} are for key {manifest.get('key')!r}, expected {key}")
    if rank is not None and (manifest.get("rank") != rank or manifest.get("world_size") != spec.world_size):
        raise ArtifactError(
            f"artifacts at {directory} are for rank {manifest.get('rank')!r} of {manifest.get('world_size')!r} "
            f"nodes, expected rank {rank} of {spec.world_size}"
        )
    neuron_config = manifest.get("neuron_config") or {}
    missing = missing_files(directory, profile, neuron_config)
    if missing:
        raise ArtifactError(f"compiled artifacts for key {key} at {directory} are incomplete: missing {missing}")
    # vLLM schedules with its own --max-num-seqs/--max-model-len/-tp (F23 neuronx_distributed_model_runner
    # get_nxd_sampling_params), so the compiled shapes must be the same numbers.
    compiled = _compiled_neuron_config(directory, profile)
    expected = {"tp_degree": spec.tp_degree, "batch_size": spec.max_num_seqs, "seq_len": spec.max_model_len}
    if rank is not None:
        # The node-independent part of the placement; start_rank_id is set per node at load (serve override).
        expected.update({"world_size": spec.tp_degree, "local_ranks_size": spec.local_tp})
    differing = {k: (compiled.get(k), v) for k, v in expected.items() if compiled.get(k) != v}
    if differing:
        detail = ", ".join(f"{k} compiled {c!r} vs spec {s!r}" for k, (c, s) in differing.items())
        raise ArtifactError(f"compiled artifacts at {directory} do not match the spec: {detail}")
    return manifest


def _compiled_neuron_config(directory: str, profile: NxdiStackProfile) -> Dict[str, Any]:
    path = os.path.join(directory, profile.neuron_config_file)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"cannot read {path}: {e}") from None
    neuron_config = data.get("neuron_config") if isinstance(data, dict) else None
    if not isinstance(neuron_config, dict):
        raise ArtifactError(f"{path} has no neuron_config section")
    return neuron_config


def remove_stale_staging(staging_root: str, key: str, max_age: float = constants.STALE_STAGING_SECONDS) -> None:
    """Remove staging dirs of ``key`` left by compiles that were killed long ago (OOM kills leave tens of GB)."""
    try:
        names = os.listdir(staging_root)
    except OSError:
        return
    now = time.time()
    for name in names:
        path = os.path.join(staging_root, name)
        try:
            old = now - os.stat(path).st_mtime > max_age
        except OSError:
            continue
        if name.startswith(key + "-") and old:
            log.info("removing stale staging dir %s", path)
            shutil.rmtree(path, ignore_errors=True)


def _new_staging_dir(staging_root: str, key: str) -> str:
    os.makedirs(staging_root, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f"{key}-", dir=staging_root)
    os.chmod(path, 0o755)  # mkdtemp makes 0700; serving pods may run as another uid and must read the result
    return path


def _move_into_place(staging: str, final: str, published: Callable[[], bool]) -> str:
    """Rename a finished staging directory to its final name: atomic on one filesystem, and a rename onto a
    non-empty directory fails, so exactly one concurrent compile wins; the losers discard their copy."""
    try:
        os.rename(staging, final)
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        if published():
            log.info("another compile published %s first; discarding ours", final)
            shutil.rmtree(staging, ignore_errors=True)
            return ALREADY_PUBLISHED
        raise CompileError(
            f"cannot publish to {final}: it exists without a valid {constants.MANIFEST_FILE}; remove it"
        ) from None
    return PUBLISHED


def _build_into(staging: str, build: BuildFn, make_manifest: Callable[[], Dict[str, Any]], profile: Stack):
    build(staging)
    manifest = make_manifest()
    missing = artifact_problems(staging, profile, manifest)
    if missing:
        raise CompileError(f"compile finished but its output lacks {missing}")
    write_manifest(staging, manifest)  # last: from here on the directory counts as complete


class LocalStore:
    """A store on a mounted volume (PVC); atomic publication by directory rename."""

    def __init__(self, root: str) -> None:
        self.root = root

    @property
    def location(self) -> str:
        return self.root

    def artifact_dir(self, key: str) -> str:
        return os.path.join(self.root, key)

    def lookup(self, key: str) -> Optional[Dict[str, Any]]:
        manifest = read_manifest(self.artifact_dir(key))
        return manifest if manifest is not None and manifest.get("key") == key else None

    def publish(
        self, key: str, build: BuildFn, make_manifest: Callable[[], Dict[str, Any]], profile: Stack
    ) -> str:
        if self.lookup(key):
            return CACHE_HIT
        staging_root = os.path.join(self.root, constants.STAGING_DIR)
        remove_stale_staging(staging_root, key)
        staging = _new_staging_dir(staging_root, key)
        try:
            _build_into(staging, build, make_manifest, profile)
            return _move_into_place(staging, self.artifact_dir(key), lambda: bool(self.lookup(key)))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


    # --- multi-node: one directory per rank, then the group manifest --------------------------------------------

    def rank_dir(self, key: str, rank: int) -> str:
        return os.path.join(self.root, key, rank_dir_name(rank))

    def lookup_rank(self, key: str, rank: int) -> Optional[Dict[str, Any]]:
        manifest = read_manifest(self.rank_dir(key, rank))
        ok = manifest is not None and manifest.get("key") == key and manifest.get("rank") == rank
        return manifest if ok else None

    def publish_rank(
        self, key: str, rank: int, build: BuildFn, make_manifest: Callable[[], Dict[str, Any]], profile: Stack
    ) -> str:
        """Like publish(), into ``<key>/rank-<r>``; ``<key>/`` itself is a plain directory shared by the ranks."""
        if self.lookup_rank(key, rank):
            return CACHE_HIT
        staging_root = os.path.join(self.root, constants.STAGING_DIR)
        remove_stale_staging(staging_root, key)
        staging = _new_staging_dir(staging_root, f"{key}-{rank_dir_name(rank)}")
        try:
            _build_into(staging, build, make_manifest, profile)
            key_dir = os.path.join(self.root, key)
            try:  # shared by the ranks: whoever creates it makes it readable for the serving pods
                os.mkdir(key_dir)
                os.chmod(key_dir, 0o755)
            except FileExistsError:
                pass
            return _move_into_place(staging, self.rank_dir(key, rank), lambda: bool(self.lookup_rank(key, rank)))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def publish_group(self, key: str, manifest: Mapping[str, Any]) -> None:
        write_manifest(os.path.join(self.root, key), manifest)  # temp file + rename: atomic


def wait_for_ranks(
    store: Any,
    key: str,
    world_size: int,
    timeout: float,
    *,
    poll: float = 10.0,
    log_every: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Dict[int, Dict[str, Any]]:
    """Rank manifests of every rank of ``key``, polling the store until all are published or ``timeout`` passes."""
    start = clock()
    found: Dict[int, Dict[str, Any]] = {}
    last_log = None
    while True:
        for rank in range(world_size):
            if rank not in found:
                manifest = store.lookup_rank(key, rank)
                if manifest is not None:
                    found[rank] = manifest
        missing = [r for r in range(world_size) if r not in found]
        if not missing:
            return found
        elapsed = clock() - start
        if elapsed >= timeout:
            raise CompileError(
                f"timed out after {int(timeout)}s waiting for the compile pods of ranks {missing} of key {key} to "
                "publish; check those pods of the compile Job"
            )
        if last_log is None or elapsed - last_log >= log_every:
            log.info("waiting for ranks %s of key %s to publish (%ds/%ds)", missing, key, elapsed, timeout)
            last_log = elapsed
        sleep(min(poll, max(0.0, timeout - elapsed)))


class S3Store:
    """A store in S3. S3 has no rename, so each publication uploads its files under a prefix of its own,
    ``<key>/<publication>/``, then creates ``<key>/manifest.json`` only if it does not exist yet (conditional
    write): the manifest is the completion marker and names the publication readers fetch. Concurrent publishers
    of one key thus never overwrite each other's objects; exactly one creates the manifest and wins, the others
    delete their own files. An interrupted upload leaves files that no manifest names.
    """

    PUBLICATION_DIR_PREFIX = "files-"

    def __init__(self, uri: str, client: Any, local_root: str) -> None:
        self.bucket, self.prefix = s3_transfer.parse_s3_uri(uri)
        self.client = client
        self.local_root = local_root  # local scratch for compile staging and serve downloads

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key_prefix(self, key: str) -> str:
        return s3_transfer.join_key(self.prefix, key)

    def artifact_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key_prefix(key)}/"

    def _read_manifest(self, prefix: str) -> Optional[Dict[str, Any]]:
        manifest_key = s3_transfer.join_key(prefix, constants.MANIFEST_FILE)
        if not s3_transfer.object_exists(self.client, self.bucket, manifest_key):
            return None
        return parse_manifest(s3_transfer.read_object(self.client, self.bucket, manifest_key).decode("utf-8"))

    def lookup(self, key: str) -> Optional[Dict[str, Any]]:
        manifest = self._read_manifest(self._key_prefix(key))
        return manifest if manifest is not None and manifest.get("key") == key else None

    def _publish_staging(self, staging: str, prefix: str) -> str:
        """Upload a built staging dir as a new publication under ``prefix/``: PUBLISHED or ALREADY_PUBLISHED."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        publication = f"{self.PUBLICATION_DIR_PREFIX}{stamp}-{os.urandom(6).hex()}"
        publication_prefix = s3_transfer.join_key(prefix, publication)
        s3_transfer.upload_dir(self.client, staging, self.bucket, publication_prefix, exclude=[constants.MANIFEST_FILE])
        manifest = read_manifest(staging) or {}
        manifest["publication"] = publication
        manifest["files"] = {
            rel: os.path.getsize(os.path.join(staging, *rel.split("/")))
            for rel in s3_transfer.local_files(staging)
            if rel != constants.MANIFEST_FILE
        }
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
        manifest_key = s3_transfer.join_key(prefix, constants.MANIFEST_FILE)
        if s3_transfer.put_if_absent(self.client, self.bucket, manifest_key, body):
            return PUBLISHED
        log.info("s3://%s/%s was published concurrently by another compile; discarding ours", self.bucket, prefix)
        s3_transfer.delete_prefix(self.client, self.bucket, publication_prefix)
        return ALREADY_PUBLISHED

    def _download(self, manifest: Mapping[str, Any], prefix: str, dest: str) -> None:
        """Copy the publication ``manifest`` names into ``dest`` (atomically, via a staging dir)."""
        staging = _new_staging_dir(os.path.join(self.local_root, constants.STAGING_DIR), os.path.basename(dest))
        try:
            publication = manifest.get("publication")
            if publication is None:  # published flat into <prefix>/ by an earlier runtime version
                s3_transfer.download_prefix(self.client, self.bucket, prefix, staging)
            else:
                source = s3_transfer.join_key(prefix, str(publication))
                s3_transfer.download_prefix(self.client, self.bucket, source, staging)
                found = {
                    rel: os.path.getsize(os.path.join(staging, *rel.split("/")))
                    for rel in s3_transfer.local_files(staging)
                }
                if found != manifest.get("files"):
                    raise ArtifactError(
                        f"s3://{self.bucket}/{source}/ does not hold the files its manifest lists "
                        f"(expected {len(manifest.get('files') or {})}, found {len(found)} or sizes differ); "
                        "delete the key's manifest.json to recompile"
                    )
                write_manifest(staging, manifest)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.isdir(dest):  # an incomplete earlier copy (no valid manifest): replace it
                shutil.rmtree(dest)
            os.rename(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def publish(
        self, key: str, build: BuildFn, make_manifest: Callable[[], Dict[str, Any]], profile: Stack
    ) -> str:
        if self.lookup(key):
            return CACHE_HIT
        staging = _new_staging_dir(os.path.join(self.local_root, constants.STAGING_DIR), key)
        try:
            _build_into(staging, build, make_manifest, profile)
            return self._publish_staging(staging, self._key_prefix(key))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # --- multi-node ------------------------------------------------------------------------------------------------

    def _rank_prefix(self, key: str, rank: int) -> str:
        return s3_transfer.join_key(self.prefix, key, rank_dir_name(rank))

    def lookup_rank(self, key: str, rank: int) -> Optional[Dict[str, Any]]:
        manifest = self._read_manifest(self._rank_prefix(key, rank))
        ok = manifest is not None and manifest.get("key") == key and manifest.get("rank") == rank
        return manifest if ok else None

    def publish_rank(
        self, key: str, rank: int, build: BuildFn, make_manifest: Callable[[], Dict[str, Any]], profile: Stack
    ) -> str:
        if self.lookup_rank(key, rank):
            return CACHE_HIT
        staging = _new_staging_dir(os.path.join(self.local_root, constants.STAGING_DIR), f"{key}-{rank_dir_name(rank)}")
        try:
            _build_into(staging, build, make_manifest, profile)
            return self._publish_staging(staging, self._rank_prefix(key, rank))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def publish_group(self, key: str, manifest: Mapping[str, Any]) -> None:
        # Only rank 0 writes it, from the published rank manifests; if a retry of rank 0 finds one, that stays.
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
        manifest_key = s3_transfer.join_key(self._key_prefix(key), constants.MANIFEST_FILE)
        s3_transfer.put_if_absent(self.client, self.bucket, manifest_key, body)

    def fetch_rank(self, key: str, rank: int) -> str:
        """Copy only ``<key>/rank-<r>/`` (and the group manifest) to ``<local_root>/<key>/``; returns the rank dir."""
        group = self.lookup(key)
        if not group:
            raise ArtifactError(
                f"compiled artifacts for key {key} are not complete at {self.artifact_uri(key)} (no group "
                f"{constants.MANIFEST_FILE}); the multi-node compile Job must finish first"
            )
        key_dir = os.path.join(self.local_root, key)
        dest = os.path.join(key_dir, rank_dir_name(rank))
        local = read_manifest(dest)
        if not (local is not None and local.get("key") == key and local.get("rank") == rank):
            rank_manifest = self.lookup_rank(key, rank)
            if rank_manifest is None:
                raise ArtifactError(
                    f"the group manifest of key {key} at {self.artifact_uri(key)} lists rank {rank}, but that "
                    f"rank's {constants.MANIFEST_FILE} is missing; delete the group manifest to recompile"
                )
            self._download(rank_manifest, self._rank_prefix(key, rank), dest)
        write_manifest(key_dir, group)
        return dest

    def fetch(self, key: str) -> str:
        """Copy ``<key>/`` to ``<local_root>/<key>`` (atomically, reusing a complete earlier copy)."""
        dest = os.path.join(self.local_root, key)
        local = read_manifest(dest)
        if local is not None and local.get("key") == key:
            return dest
        manifest = self.lookup(key)
        if not manifest:
            raise ArtifactError(
                f"compiled artifacts for key {key} not found at {self.artifact_uri(key)}; "
                "the compile Job must finish first"
            )
        self._download(manifest, self._key_prefix(key), dest)
        return dest


def local_copy(store: Any, key: str, artifact_dir: str) -> str:
    """Where serving reads ``key``: the store's own directory for a mounted store, a local copy of an S3 store."""
    if isinstance(store, S3Store):
        log.info("copying artifacts for key %s from %s to %s", key, store.artifact_uri(key), artifact_dir)
        return store.fetch(key)
    return artifact_dir


def open_store(store: str, local_root: str, s3_client: Any = None):
    """LocalStore for a path, S3Store for s3:// (boto3 client created lazily unless one is given)."""
    if store.startswith("s3://"):
        return S3Store(store, s3_client if s3_client is not None else s3_transfer.make_client(), local_root)
    return LocalStore(store)
