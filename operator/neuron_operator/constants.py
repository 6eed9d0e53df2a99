"""Every API name, label, annotation, env key and port the operator writes, in one place.

Our own keys live under the API group prefix so they never collide with users' or other controllers' keys.
"""

from neuron_runtime import constants as runtime_constants
from neuron_runtime.stacks import NEURON_2_23_VLLM_0_7_2

API_GROUP = "inference.neuron-operator.io"
VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{VERSION}"  # what an object's apiVersion field holds
KIND = "NeuronInferenceService"
PLURAL = "neuroninferenceservices"
SINGULAR = "neuroninferenceservice"
SHORT_NAMES = ("nis",)
CRD_NAME = f"{PLURAL}.{API_GROUP}"

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
# On a Deployment serving one replica fewer so that compile Job <value> gets that replica's node
# (spec.runtime.lendReplicaToCompile): while the annotation names the current compile Job, the lending holds.
ANNOTATION_LENT_TO_COMPILE = f"{API_GROUP}/lent-to-compile"
ANNOTATION_ARTIFACT_LOCATION = f"{API_GROUP}/artifact-location"
# On every child we apply: a hash of the manifest we applied, so an unchanged child costs no request (children.py).
ANNOTATION_APPLIED_HASH = f"{API_GROUP}/applied-hash"
# On compile Jobs of vllm-neuron stacks: where the compile runs (cpu or neuron) and why.
ANNOTATION_COMPILE_TARGET = f"{API_GROUP}/compile-target"
# Multi-node gang bookkeeping on each group StatefulSet: the pod uids of the last complete group, how often the
# operator recreated the group and when (for backoff).
ANNOTATION_GROUP_MEMBERS = f"{API_GROUP}/group-members"
ANNOTATION_GROUP_RESTARTS = f"{API_GROUP}/group-restarts"
ANNOTATION_GROUP_RESTARTED_AT = f"{API_GROUP}/group-restarted-at"
# kopf's bookkeeping, kept out of the public status and under our prefix.
KOPF_PREFIX = f"kopf.{API_GROUP}"

# --- env passed to neuron-runtime: the contract is defined once, in runtime/neuron_runtime/constants.py ----------
RT = runtime_constants
ENV_COMPILE_SPEC = RT.ENV_COMPILE_SPEC
ENV_ARTIFACT_KEY = RT.ENV_ARTIFACT_KEY
ENV_ARTIFACT_STORE = RT.ENV_ARTIFACT_STORE
ENV_SERVE_CONFIG = RT.ENV_SERVE_CONFIG
ENV_LOCAL_ARTIFACTS = RT.ENV_LOCAL_ARTIFACTS
ENV_HF_TOKEN = RT.ENV_HF_TOKEN
ENV_RANK = RT.ENV_RANK
ENV_WORLD_SIZE = RT.ENV_WORLD_SIZE
ENV_GROUP_INDEX = RT.ENV_GROUP_INDEX
ENV_LEADER_ADDRESS = RT.ENV_LEADER_ADDRESS
ENV_PEER_ADDRESSES = RT.ENV_PEER_ADDRESSES
ENV_RENDEZVOUS_TIMEOUT = RT.ENV_RENDEZVOUS_TIMEOUT
RENDEZVOUS_PORT = RT.RENDEZVOUS_PORT  # neuron-runtime's own leader/worker liveness listener
DEFAULT_RENDEZVOUS_TIMEOUT_SECONDS = RT.DEFAULT_RENDEZVOUS_TIMEOUT_SECONDS
# Paths the runtime reads by default, mounted by the operator (emptyDirs or the store).
LOCAL_ARTIFACTS_DIR = RT.DEFAULT_LOCAL_ARTIFACTS  # S3 store: downloaded here before serving
MODEL_CACHE_DIR = RT.DEFAULT_MODEL_CACHE  # runtime's download cache for hf:// and s3:// models
MODELS_MOUNT_ROOT = RT.PVC_MOUNT_ROOT  # pvc://claim/path -> <root>/<claim>/path
# vllm-neuron stacks: the engine's local cache root (VLLM_CACHE_ROOT), an emptyDir.
ENGINE_CACHE_DIR = RT.DEFAULT_ENGINE_CACHE

# The seed stack's own variables (read by vLLM / the fork, not by our runtime) come from its profile, so the names
# are defined once, next to their upstream sources (runtime/neuron_runtime/stacks/neuron_2_23.py): the pod shows
# where the engine loads from and which multi-node settings it gets; the runtime verifies and forces the same.
_SEED = NEURON_2_23_VLLM_0_7_2
ENV_NEURON_COMPILED_ARTIFACTS = _SEED.env_compiled_artifacts
ENV_VLLM_NEURON_FRAMEWORK = _SEED.env_framework
VLLM_NEURON_FRAMEWORK_NXDI = _SEED.framework_nxdi
NEURON_MULTI_NODE_ENV_FLAG = _SEED.env_multi_node
ENV_NEURON_RANK_ID = _SEED.env_rank_id
ENV_NEURON_WORLD_SIZE = _SEED.env_world_size
ENV_MASTER_ADDR = _SEED.multi_node.env_master_addr
ENV_MASTER_PORT = _SEED.multi_node.env_master_port
ENV_NEURON_RT_ROOT_COMM_ID = _SEED.multi_node.env_root_comm_id
ENV_NEURON_LOCAL_TP = _SEED.multi_node.env_local_tp
MASTER_PORT = _SEED.multi_node.default_master_port  # torch.distributed gloo rendezvous (env://)
NEURON_RT_ROOT_COMM_PORT = _SEED.multi_node.default_root_comm_port
EFA_ENV = dict(_SEED.multi_node.fabric_env)
ENV_POD_NAME = "POD_NAME"
ENV_POD_NAMESPACE = "POD_NAMESPACE"

# --- paths inside runtime pods -----------------------------------------------------------------------
ARTIFACT_STORE_MOUNT = "/var/lib/neuron-operator/artifacts"
SHM_MOUNT = "/dev/shm"
TMP_MOUNT = "/tmp"
COMPILE_CACHE_MOUNT = "/var/tmp/neuron-compile-cache"  # neuronx-cc persistent cache default (SDK 2.23 neuron-caching.rst)

# --- ports -------------------------------------------------------------------------------------------
HTTP_PORT = RT.DEFAULT_SERVING_PORT
HTTP_PORT_NAME = "http"
HEALTH_PATH = "/health"  # vLLM OpenAI server: 200 once the engine is up (F23 api_server.py)

# --- autoscalers of spec.autoscaling (one child, named like the service) ----------------------------------
KEDA_API_VERSION = "keda.sh/v1alpha1"
SCALED_OBJECT_KIND = "ScaledObject"
SCALED_OBJECT_PLURAL = "scaledobjects"
HPA_API_VERSION = "autoscaling/v2"
HPA_KIND = "HorizontalPodAutoscaler"
# The operator setting (Helm autoscaling.provider): auto resolves to keda or hpa once, at start-up.
AUTOSCALER_AUTO = "auto"
AUTOSCALER_KEDA = "keda"
AUTOSCALER_HPA = "hpa"

# --- Neuron scheduling -------------------------------------------------------------------------------
NEURON_TAINT_KEY = "aws.amazon.com/neuron"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
# Our node label for a node's logical NeuronCore config on Trn2/Trn3. Neuron documents no such label (LNC is set
# per node by launch-template UserData writing /opt/aws/neuron/logical_nc_config, aws-neuron-sdk
# deploy/eks/prerequisites.rst), so platform teams label their LNC=1 node groups with it; unlabelled nodes are
# taken to run the instance type's default.
LNC_NODE_LABEL = f"{API_GROUP}/lnc"
