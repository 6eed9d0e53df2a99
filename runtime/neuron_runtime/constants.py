"""The fixed contract between the operator and the runtime: env var names, default paths, file names, exit codes.

Stack-specific names (vLLM / Neuron env vars, CLI flags, module paths) are NOT here: they belong to a stack profile
in :mod:`neuron_runtime.stacks`. This module only holds what the operator and the runtime agree on, whatever the
stack.
"""

# --- Environment set by the operator on the compile Job pod and the serving pods -------------------------------
ENV_COMPILE_SPEC = "NEURON_OPERATOR_COMPILE_SPEC"  # JSON of compile_spec.CompileSpec
ENV_ARTIFACT_KEY = "NEURON_OPERATOR_ARTIFACT_KEY"  # compile_key(spec) as the operator computed it
ENV_ARTIFACT_STORE = "NEURON_OPERATOR_ARTIFACT_STORE"  # local path (mounted PVC) or s3://bucket/prefix
ENV_SERVE_CONFIG = "NEURON_OPERATOR_SERVE_CONFIG"  # serving only: JSON, see contract.ServeConfig
ENV_LOCAL_ARTIFACTS = "NEURON_OPERATOR_LOCAL_ARTIFACTS"  # serving only: where S3 artifacts are copied to
ENV_TERMINATION_LOG = "NEURON_OPERATOR_TERMINATION_LOG"  # override of the termination message path
ENV_HF_TOKEN = "HF_TOKEN"  # Hugging Face token (the operator maps tokenSecretRef to it)

# --- Environment read only by the runtime (image defaults, tests) ------------------------------------------------
# Where hf:// and s3:// models and adapters are downloaded to. The same URI always maps to the same local path,
# so paths recorded in the compiled artifacts (LoRA checkpoints, _name_or_path) are valid again at serve time.
ENV_MODEL_CACHE = "NEURON_RUNTIME_MODEL_CACHE"
# The stack profile id this image was built for (set in Dockerfile.neuron); compared with CompileSpec.stack.
ENV_IMAGE_STACK = "NEURON_RUNTIME_STACK"
# "1" skips the installed-stack check (unit tests, dry runs on a laptop). Never set it in a real image.
ENV_SKIP_STACK_CHECK = "NEURON_RUNTIME_SKIP_STACK_CHECK"

# --- Default paths -----------------------------------------------------------------------------------------------
DEFAULT_TERMINATION_LOG = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
DEFAULT_LOCAL_ARTIFACTS = "/var/lib/neuron-runtime/artifacts"
DEFAULT_MODEL_CACHE = "/var/lib/neuron-runtime/models"
# The operator mounts PersistentVolumeClaim <claim> of a pvc://<claim>/<path> URI here.
PVC_MOUNT_ROOT = "/var/lib/neuron-operator/models"

# --- Artifact layout: <store>/<key>/ ------------------------------------------------------------------------------
MANIFEST_FILE = "manifest.json"  # written last; its presence (with the right key) means "complete"
MANIFEST_SCHEMA_VERSION = 1
STAGING_DIR = ".staging"  # <store>/.staging/<key>-<random>/ : compile output before the atomic rename
# A staging dir this old belongs to a compile that was killed (OOM, deadline) and is removed by the next compile of
# the same key. Far beyond any compile Job deadline, so a live compile is never touched.
STALE_STAGING_SECONDS = 48 * 3600
TERMINATION_MESSAGE_MAX_CHARS = 4000  # the kubelet keeps at most 4096 bytes

# --- Exit codes (the operator maps them to condition reasons) -----------------------------------------------------
EXIT_OK = 0
EXIT_FAILURE = 1  # compile failed, model download failed, or any other runtime failure
EXIT_BAD_SPEC = 2  # malformed spec/serve config, artifact key mismatch, unsupported combination, wrong stack
EXIT_ARTIFACT_INVALID = 3  # serve: compiled artifacts missing, incomplete or for another key
