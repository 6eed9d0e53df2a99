"""Every API name, label, annotation, env key and port the operator writes, in one place.

Our own keys live under the API group prefix so they never collide with users' or other controllers' keys.
"""

from neuron_runtime import constants as runtime_constants

API_GROUP = "inference.neuron-operator.io"
API_VERSION = "v1alpha1"
KIND = "NeuronInferenceService"
PLURAL = "neuroninferenceservices"
SINGULAR = "neuroninferenceservice"
SHORT_NAME = "nis"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

# The single field manager for every server-side apply the operator makes.
FIELD_MANAGER = "neuron-operator"

# --- labels on every child -------------------------------------------------------------------------
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
APP_NAME = "neuron-inference-service"
MANAGED_BY = "neuron-operator"
COMPONENT_SERVING = "serving"
COMPONENT_COMPILE = "compile"

LABEL_SERVICE = f"{API_GROUP}/service"  # the owning NeuronInferenceService (serving children only)
LABEL_ARTIFACT_KEY = f"{API_GROUP}/artifact-key"  # compile key of the artifact a pod/Job uses or makes
LABEL_GROUP = f"{API_GROUP}/group"  # multi-node: "<service>-g<index>", one StatefulSet per replica group
LABEL_GROUP_INDEX = f"{API_GROUP}/group-index"
# Set on StatefulSet pods by Kubernetes itself (PodIndexLabel, GA in 1.32): the rank, and "0" marks the leader.
LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"
LEADER_POD_INDEX = "0"

# --- annotations -----------------------------------------------------------------------------------
# The compile spec a serving workload runs with: lets a later pass rebuild it for the *old* artifact while a
# new one compiles (non-compile changes such as replicas still apply during a recompile).
ANNOTATION_COMPILE_SPEC = f"{API_GROUP}/compile-spec"
ANNOTATION_ARTIFACT_LOCATION = f"{API_GROUP}/artifact-location"
# On compile Jobs of vllm-neuron stacks: where the compile runs (cpu or neuron) and why.
ANNOTATION_COMPILE_TARGET = f"{API_GROUP}/compile-target"
# Multi-node gang bookkeeping on each group StatefulSet: the pod uids of the last complete group, how often the
# operator recreated the group and when (for backoff).
ANNOTATION_GROUP_MEMBERS = f"{API_GROUP}/group-members"
ANNOTATION_GROUP_RESTARTS = f"{API_GROUP}/group-restarts"
ANNOTATION_GROUP_RESTARTED_AT = f"{API_GROUP}/group-restarted-at"
# kopf's bookkeeping, kept out of the public status and under our prefix.
KOPF_PREFIX = f"kopf.{API_GROUP}"

# --- env passed to neuron-runtime (the contract with runtime/neuron_runtime) --------------------------
ENV_COMPILE_SPEC = "NEURON_OPERATOR_COMPILE_SPEC"
ENV_ARTIFACT_KEY = "NEURON_OPERATOR_ARTIFACT_KEY"
ENV_ARTIFACT_STORE = "NEURON_OPERATOR_ARTIFACT_STORE"
ENV_SERVE_CONFIG = "NEURON_OPERATOR_SERVE_CONFIG"
ENV_LOCAL_ARTIFACTS = "NEURON_OPERATOR_LOCAL_ARTIFACTS"
ENV_HF_TOKEN = "HF_TOKEN"
# Read by vLLM itself (F23 neuronx_distributed.py / worker/utils.py): set on the pod so `kubectl describe` shows
# exactly where the engine loads from; the runtime verifies the directory before starting vLLM.
ENV_NEURON_COMPILED_ARTIFACTS = "NEURON_COMPILED_ARTIFACTS"
ENV_VLLM_NEURON_FRAMEWORK = "VLLM_NEURON_FRAMEWORK"
VLLM_NEURON_FRAMEWORK_NXDI = "neuronx-distributed-inference"
# Multi-node contract with neuron-runtime (runtime/neuron_runtime/constants.py) ...
ENV_RANK = "NEURON_OPERATOR_RANK"
ENV_WORLD_SIZE = "NEURON_OPERATOR_WORLD_SIZE"
ENV_GROUP_INDEX = "NEURON_OPERATOR_GROUP_INDEX"
ENV_LEADER_ADDRESS = "NEURON_OPERATOR_LEADER_ADDRESS"
ENV_PEER_ADDRESSES = "NEURON_OPERATOR_PEER_ADDRESSES"
ENV_RENDEZVOUS_TIMEOUT = "NEURON_OPERATOR_RENDEZVOUS_TIMEOUT"
# ... and the pinned fork's own multi-node settings (F23 examples/neuron/multi_node/launch_script.py and
# multi_node_launcher.sh; vllm/worker/neuron_worker.py reads ENABLE_NEURON_MULTI_NODE, NEURON_RANK_ID, WORLD_SIZE).
NEURON_MULTI_NODE_ENV_FLAG = "ENABLE_NEURON_MULTI_NODE"
ENV_NEURON_RANK_ID = "NEURON_RANK_ID"
ENV_NEURON_WORLD_SIZE = "WORLD_SIZE"
ENV_MASTER_ADDR = "MASTER_ADDR"
ENV_MASTER_PORT = "MASTER_PORT"
ENV_NEURON_RT_ROOT_COMM_ID = "NEURON_RT_ROOT_COMM_ID"
ENV_NEURON_LOCAL_TP = "NEURON_LOCAL_TP"
MASTER_PORT = 29500  # torch.distributed gloo rendezvous (env://) used by the fork's NeuronWorker
NEURON_RT_ROOT_COMM_PORT = 63423  # the fork's launch_script.py uses <master>:63423
RENDEZVOUS_PORT = 29400  # neuron-runtime's own leader/worker liveness listener
DEFAULT_RENDEZVOUS_TIMEOUT_SECONDS = 600
EFA_ENV = {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "FI_EFA_FORK_SAFE": "1"}
ENV_POD_NAME = "POD_NAME"
ENV_POD_NAMESPACE = "POD_NAMESPACE"

# --- paths inside runtime pods -----------------------------------------------------------------------
ARTIFACT_STORE_MOUNT = "/var/lib/neuron-operator/artifacts"
MODELS_MOUNT_ROOT = "/var/lib/neuron-operator/models"  # pvc://claim/path -> <root>/<claim>/path
LOCAL_ARTIFACTS_DIR = "/var/lib/neuron-runtime/artifacts"  # S3 store: downloaded here before serving
MODEL_CACHE_DIR = "/var/lib/neuron-runtime/models"  # runtime's download cache for hf:// and s3:// models
SHM_MOUNT = "/dev/shm"
TMP_MOUNT = "/tmp"
COMPILE_CACHE_MOUNT = "/var/tmp/neuron-compile-cache"  # neuronx-cc persistent cache default (SDK 2.23 neuron-caching.rst)
# vllm-neuron stacks: the engine's local cache root (VLLM_CACHE_ROOT), an emptyDir; the runtime's default path.
ENGINE_CACHE_DIR = runtime_constants.DEFAULT_ENGINE_CACHE

# --- ports -------------------------------------------------------------------------------------------
HTTP_PORT = 8000
HTTP_PORT_NAME = "http"
HEALTH_PATH = "/health"  # vLLM OpenAI server: 200 once the engine is up (F23 api_server.py)

# --- Neuron scheduling -------------------------------------------------------------------------------
NEURON_TAINT_KEY = "aws.amazon.com/neuron"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
