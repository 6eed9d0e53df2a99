"""Every API name, label, annotation, env key and port the operator writes, in one place.

Our own keys live under the API group prefix so they never collide with users' or other controllers' keys.
"""

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
LABEL_ROLE = f"{API_GROUP}/role"  # leader | worker (multi-node)
ROLE_LEADER = "leader"
ROLE_WORKER = "worker"

# --- annotations -----------------------------------------------------------------------------------
# The compile spec a serving workload runs with: lets a later pass rebuild it for the *old* artifact while a
# new one compiles (non-compile changes such as replicas still apply during a recompile).
ANNOTATION_COMPILE_SPEC = f"{API_GROUP}/compile-spec"
ANNOTATION_ARTIFACT_LOCATION = f"{API_GROUP}/artifact-location"
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

# --- ports -------------------------------------------------------------------------------------------
HTTP_PORT = 8000
HTTP_PORT_NAME = "http"
HEALTH_PATH = "/health"  # vLLM OpenAI server: 200 once the engine is up (F23 api_server.py)

# --- Neuron scheduling -------------------------------------------------------------------------------
NEURON_TAINT_KEY = "aws.amazon.com/neuron"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
