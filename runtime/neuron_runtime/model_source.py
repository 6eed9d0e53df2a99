"""Model URIs: where a model, LoRA adapter or draft model comes from and where it lives on local disk.

Supported URIs:
  ``hf://org/name`` (optionally ``hf://org/name@revision``): Hugging Face Hub, token from env HF_TOKEN;
  ``s3://bucket/prefix``: a directory of files in S3;
  ``pvc://claim/path``: a PersistentVolumeClaim the operator mounts at /var/lib/neuron-operator/models/<claim>;
  ``/absolute/path``: a directory already on local disk (development, tests).

The URI -> local path mapping is a pure function and deterministic: compile and serve pods map the same URI to
the same path, which matters because NxDI records local paths in the compiled artifacts (LoRA checkpoint paths,
``_name_or_path``) and vLLM validates the LoRA paths again at start-up.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from neuron_runtime import constants, s3_transfer
from neuron_runtime.errors import ModelSourceError, SpecError

log = logging.getLogger(__name__)

DEFAULT_REVISION = "main"
# Meta's consolidated checkpoints in Llama repos: never read by NxDI (it loads the HF-format files at the top level)
# and as large as the model itself.
ALWAYS_IGNORED = ("original/*",)
# Weight files; serving with self-contained artifacts (save_sharded_checkpoint) needs only config and tokenizer.
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.h5", "*.msgpack", "*.onnx")
# Pickled duplicates of safetensors weights, which NxDI never reads when safetensors exist
# (NX3 modules/checkpoint.py load_state_dict tries safetensors first).
PICKLE_WEIGHT_PATTERNS = ("*.bin", "*.pt", "*.pth")
_CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # RFC 1123 subdomain, as Kubernetes names claims


@dataclass(frozen=True)
class ModelRef:
    scheme: str  # "hf" | "s3" | "pvc" | "local"
    location: str  # hf: org/name; s3: bucket/prefix; pvc: claim/path; local: absolute path
    revision: Optional[str] = None  # hf only


def _safe_relative(path: str, uri: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise SpecError(f"model URI {uri!r} must not contain '..'")
    return "/".join(parts)


def parse_model_uri(uri: str, revision: Optional[str] = None) -> ModelRef:
    """Parse a model URI; ``revision`` (the spec's modelRevision) applies to hf:// and conflicts with an @rev."""
    if uri.startswith("hf://"):
        repo, _, uri_rev = uri[len("hf://") :].partition("@")
        repo = _safe_relative(repo, uri)
        if repo.count("/") > 1 or not repo:
            raise SpecError(f"hf model URI must look like hf://org/name, got {uri!r}")
        if uri_rev and revision and uri_rev != revision:
            raise SpecError(f"model URI {uri!r} pins revision {uri_rev!r} but the spec asks for {revision!r}")
        return ModelRef("hf", repo, uri_rev or revision or DEFAULT_REVISION)
    if uri.startswith("s3://"):
        try:
            bucket, prefix = s3_transfer.parse_s3_uri(uri)
        except ValueError as e:
            raise SpecError(str(e)) from None
        return ModelRef("s3", "/".join(p for p in (bucket, _safe_relative(prefix, uri)) if p))
    if uri.startswith("pvc://"):
        claim, _, path = uri[len("pvc://") :].partition("/")
        if not _CLAIM_NAME.match(claim):
            raise SpecError(f"pvc model URI must look like pvc://<claim>/<path>, got {uri!r}")
        rel = _safe_relative(path, uri)
        return ModelRef("pvc", f"{claim}/{rel}" if rel else claim)
    if uri.startswith("/"):
        return ModelRef("local", posixpath.normpath(uri))
    raise SpecError(f"unsupported model URI {uri!r}: use hf://org/name, s3://bucket/prefix or pvc://claim/path")


def _revision_dir(revision: str) -> str:
    # Branch names may contain "/" (refs/pr/1); keep one directory level per revision.
    return revision.replace("/", "--")


def local_model_path(
    uri: str,
    revision: Optional[str] = None,
    *,
    model_cache: str = constants.DEFAULT_MODEL_CACHE,
    pvc_root: str = constants.PVC_MOUNT_ROOT,
) -> str:
    """The local directory a model URI is (or will be) available at. Pure: no I/O."""
    ref = parse_model_uri(uri, revision)
    if ref.scheme == "hf":
        return posixpath.join(model_cache, "hf", ref.location, _revision_dir(ref.revision or DEFAULT_REVISION))
    if ref.scheme == "s3":
        return posixpath.join(model_cache, "s3", ref.location)
    if ref.scheme == "pvc":
        return posixpath.join(pvc_root, ref.location)
    return ref.location


def display_name(uri: str) -> str:
    """A readable model name for --served-model-name when the operator does not give one."""
    ref = parse_model_uri(uri)
    if ref.scheme == "hf":
        return ref.location
    return posixpath.basename(ref.location.rstrip("/")) or ref.location


def model_cache_dir(env: Mapping[str, str]) -> str:
    return env.get(constants.ENV_MODEL_CACHE) or constants.DEFAULT_MODEL_CACHE


def ignore_patterns(filenames: Iterable[str], include_weights: bool) -> tuple:
    """Which files of a model repository not to download, given the repository's file names."""
    if not include_weights:
        return ALWAYS_IGNORED + WEIGHT_PATTERNS
    if any(name.endswith(".safetensors") for name in filenames):
        return ALWAYS_IGNORED + PICKLE_WEIGHT_PATTERNS
    return ALWAYS_IGNORED


def materialize(
    uri: str,
    revision: Optional[str],
    *,
    include_weights: bool,
    env: Mapping[str, str],
    pvc_root: str = constants.PVC_MOUNT_ROOT,
) -> str:
    """Make the model available locally and return its directory (downloads hf:// and s3:// URIs)."""
    path = local_model_path(uri, revision, model_cache=model_cache_dir(env), pvc_root=pvc_root)
    ref = parse_model_uri(uri, revision)
    if ref.scheme in ("pvc", "local"):
        if not os.path.isdir(path):
            hint = " (is the claim mounted by the operator?)" if ref.scheme == "pvc" else ""
            raise ModelSourceError(f"model directory {path} for {uri} does not exist{hint}")
        return path
    log.info("downloading %s to %s (weights: %s)", uri, path, include_weights)
    os.makedirs(path, exist_ok=True)
    if ref.scheme == "hf":
        _download_hf(ref, path, include_weights, env)
        return path
    bucket, _, prefix = ref.location.partition("/")
    try:
        client = s3_transfer.make_client()
        names = list(s3_transfer.list_keys(client, bucket, prefix))
        patterns = ignore_patterns(names, include_weights)
        copied = s3_transfer.download_prefix(client, bucket, prefix, path, patterns)
    except ImportError as e:
        raise ModelSourceError(f"boto3 is not installed; cannot download {uri}") from e
    except (s3_transfer.S3AccessError, ValueError, OSError) as e:  # S3 refused, an unsafe key, or the local disk
        raise ModelSourceError(f"downloading {uri} failed: {e}") from e
    if not copied:
        raise ModelSourceError(f"no files found under {uri}")
    return path


def _download_hf(ref: ModelRef, path: str, include_weights: bool, env: Mapping[str, str]) -> None:
    try:
        from huggingface_hub import list_repo_files, snapshot_download  # lazy: in the image via transformers
    except ImportError as e:
        raise ModelSourceError("huggingface_hub is not installed; cannot download hf:// models") from e
    token = env.get(constants.ENV_HF_TOKEN) or None
    try:
        names = list_repo_files(ref.location, revision=ref.revision, token=token)
        snapshot_download(
            repo_id=ref.location,
            revision=ref.revision,
            local_dir=path,
            token=token,
            ignore_patterns=list(ignore_patterns(names, include_weights)),
        )
    except Exception as e:  # hub errors (auth, not found, network) all mean the same thing to the user
        raise ModelSourceError(f"downloading hf://{ref.location}@{ref.revision} failed: {type(e).__name__}: {e}") from e
