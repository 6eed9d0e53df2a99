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

# --- Multi-node serving: set by the operator on every pod of a replica group (one StatefulSet per group) -----------
# Ordinal of this pod in its group, from the pod-index label via the downward API; "0" is the leader (runs the
# OpenAI server), 1..N-1 are workers (run the engine worker loop).
ENV_RANK = "NEURON_OPERATOR_RANK"
ENV_WORLD_SIZE = "NEURON_OPERATOR_WORLD_SIZE"  # nodes in the group; must equal CompileSpec.world_size
ENV_GROUP_INDEX = "NEURON_OPERATOR_GROUP_INDEX"  # which replica group (G in <svc>-g<G>-<ordinal>); default 0
# Stable DNS name of ordinal 0: <svc>-g<G>-0.<svc>-peers.<ns>.svc.cluster.local (headless Service, not-ready
# addresses published, so the name resolves as soon as the pod has an IP).
ENV_LEADER_ADDRESS = "NEURON_OPERATOR_LEADER_ADDRESS"
ENV_PEER_ADDRESSES = "NEURON_OPERATOR_PEER_ADDRESSES"  # comma list of every member's DNS name, in rank order
ENV_RENDEZVOUS_TIMEOUT = "NEURON_OPERATOR_RENDEZVOUS_TIMEOUT"  # seconds to wait for the group to form
DEFAULT_RENDEZVOUS_TIMEOUT_SECONDS = 600
# TCP port of the leader's rendezvous listener (runtime to runtime; not vLLM's, not torch's MASTER_PORT 29500, not
# the Neuron runtime's root communicator 63423). Containers should declare it; nothing else may use it.
RENDEZVOUS_PORT = 29400

# --- Multi-node compile: the operator runs the compile Job as an Indexed Job, completions = parallelism = nodes -----
ENV_JOB_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"  # set by Kubernetes on Indexed Job pods; the rank to compile

# --- Environment read only by the runtime (image defaults, tests) ------------------------------------------------
# Where hf:// and s3:// models and adapters are downloaded to. The same URI always maps to the same local path,
# so paths recorded in the compiled artifacts (LoRA checkpoints, _name_or_path) are valid again at serve time.
ENV_MODEL_CACHE = "NEURON_RUNTIME_MODEL_CACHE"
# The stack profile id this image was built for (set in Dockerfile.neuron); compared with CompileSpec.stack.
ENV_IMAGE_STACK = "NEURON_RUNTIME_STACK"
# "1" skips the installed-stack check (unit tests, dry runs on a laptop). Never set it in a real image.
ENV_SKIP_STACK_CHECK = "NEURON_RUNTIME_SKIP_STACK_CHECK"
# Overrides of multi-node timing (seconds); every member of a group must see the same values.
ENV_RENDEZVOUS_PORT = "NEURON_RUNTIME_RENDEZVOUS_PORT"  # default RENDEZVOUS_PORT
ENV_HEARTBEAT_TIMEOUT = "NEURON_RUNTIME_HEARTBEAT_TIMEOUT"  # a peer silent this long is lost; default below
DEFAULT_HEARTBEAT_TIMEOUT_SECONDS = 30.0
# How long rank 0 of a multi-node compile waits, after publishing its own rank, for the other ranks. Below the
# operator's default compile Job deadline (4 h) so the pod ends with "ranks [..] never published", not a deadline.
ENV_COMPILE_GROUP_TIMEOUT = "NEURON_RUNTIME_COMPILE_GROUP_TIMEOUT"
DEFAULT_COMPILE_GROUP_TIMEOUT_SECONDS = 3 * 3600

# --- TEST HOOKS: read only when ENV_TEST_MODE is "1". Never set any of these in a real pod. -----------------------
ENV_TEST_MODE = "NEURON_RUNTIME_TEST_MODE"
# Name resolution for the rendezvous without DNS: "name=addr,name=addr" or "@/path/file" (lines "name addr", the
# file is re-read on every lookup so a test can make a name appear or disappear). Unlisted names do not resolve.
ENV_TEST_HOSTS = "NEURON_RUNTIME_TEST_HOSTS"
ENV_TEST_BIND_HOST = "NEURON_RUNTIME_TEST_BIND_HOST"  # bind listeners to this address (e.g. 127.0.0.3), not all
# "1": run neuron_runtime.fake_engine (a trivial HTTP server / sleeper) instead of vLLM; see that module.
ENV_FAKE_ENGINE = "NEURON_RUNTIME_FAKE_ENGINE"
ENV_FAKE_ENGINE_RECORD = "NEURON_RUNTIME_FAKE_ENGINE_RECORD"  # fake engine writes its argv + env here (JSON)
ENV_FAKE_ENGINE_EXIT = "NEURON_RUNTIME_FAKE_ENGINE_EXIT"  # "<seconds>:<code>": the fake engine exits by itself
# "1": multi-node serve skips the fabric check (fi_info) before the rendezvous; see fabric.py.
ENV_TEST_SKIP_FABRIC_CHECK = "NEURON_RUNTIME_TEST_SKIP_FABRIC_CHECK"
# A directory standing in for /sys/fs/cgroup (memory.max): the compile's memory check against a chosen limit.
ENV_TEST_CGROUP_ROOT = "NEURON_RUNTIME_TEST_CGROUP_ROOT"

# --- The serving port: vLLM's OpenAI server listens here (the operator's Service and probes point at it) -------------
DEFAULT_SERVING_PORT = 8000  # vLLM's own --port default (vllm/entrypoints/openai/cli_args.py FrontendArgs.port)

# --- Default paths -----------------------------------------------------------------------------------------------
DEFAULT_TERMINATION_LOG = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
DEFAULT_LOCAL_ARTIFACTS = "/var/lib/neuron-runtime/artifacts"
DEFAULT_MODEL_CACHE = "/var/lib/neuron-runtime/models"
# vllm-neuron stacks: the engine's local cache root (VLLM_CACHE_ROOT, an emptyDir) and the Prometheus multiprocess
# directory (recreated empty at every start: vllm-neuron design/vllm/metrics.md "wipe between server restarts").
ENV_ENGINE_CACHE = "NEURON_RUNTIME_ENGINE_CACHE"
DEFAULT_ENGINE_CACHE = "/var/lib/neuron-runtime/engine-cache"
PROMETHEUS_DIR_NAME = "prometheus-multiproc"
# The operator mounts PersistentVolumeClaim <claim> of a pvc://<claim>/<path> URI here.
PVC_MOUNT_ROOT = "/var/lib/neuron-operator/models"

# --- Artifact layout: <store>/<key>/ ------------------------------------------------------------------------------
MANIFEST_FILE = "manifest.json"  # written last; its presence (with the right key) means "complete"
# Multi-node (world_size > 1): <store>/<key>/rank-<r>/ holds node r's self-contained NxDI output plus its own
# manifest.json; <store>/<key>/manifest.json (the group manifest) is written by rank 0 once every rank is published.
RANK_DIR_FORMAT = "rank-{rank}"
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
EXIT_RENDEZVOUS_TIMEOUT = 4  # multi-node serve: the group did not form within NEURON_OPERATOR_RENDEZVOUS_TIMEOUT
EXIT_PEER_LOST = 5  # multi-node serve: a formed group lost a member (worker: "lost leader"); restart the group
# serve (vllm-neuron stacks): a graph the engine needs is not in the compiled artifact, and serving is cache-hit-only,
# so the pod ends instead of compiling on the Neuron node. Restarting cannot help; the operator reports Stalled.
EXIT_CACHE_MISS = 6
# multi-node serve: libfabric has no provider for the fabric the engine is told to use (FI_PROVIDER, efa): the pod
# got no EFA device or the image has no EFA user space. Found before the rendezvous; restarting the pod on the same
# node cannot help, so the operator reports Stalled.
EXIT_FABRIC_UNAVAILABLE = 7
# compile (2.23 stack): the model's checkpoint cannot fit the compile pod's memory limit (NxD Inference loads it
# whole to shard it), found before loading it. A retry has the same limit, so the Job fails at once.
EXIT_COMPILE_MEMORY = 8
