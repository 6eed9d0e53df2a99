#!/usr/bin/env bash
# make demo: local simulated cluster -> CRD -> operator -> examples/llama.yaml -> watch Compiling -> Ready.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=${TESTENV_DIR:-$ROOT/.testenv}
PYTHON=${PYTHON:-python3}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

"$ROOT/hack/cluster.sh" up
BIN=$("$ROOT/hack/testenv-build.sh" | tail -1)
export KUBECONFIG=$D/kubeconfig PATH=$BIN:$PATH

say "simulated Neuron nodes"
kubectl get nodes -o custom-columns='NAME:.metadata.name,INSTANCE:.metadata.labels.node\.kubernetes\.io/instance-type,NEURON-DEVICES:.status.allocatable.aws\.amazon\.com/neuron,NEURONCORES:.status.allocatable.aws\.amazon\.com/neuroncore,EFA:.status.allocatable.vpc\.amazonaws\.com/efa'

say "installing the CRD"
kubectl apply --server-side -f "$ROOT/crds/neuroninferenceservices.yaml"
kubectl wait --for=condition=Established crd/neuroninferenceservices.inference.neuron-operator.io --timeout=60s
kubectl apply -f "$ROOT/hack/demo-prereqs.yaml"

# The demo operator watches only `default`, so it never competes with test operators on the same cluster.
say "starting the operator (log: $D/operator.log)"
if [ -f "$D/operator.pid" ] && kill -0 "$(cat "$D/operator.pid")" 2>/dev/null; then
  echo "operator already running (pid $(cat "$D/operator.pid"))"
else
  # Both ports are on 127.0.0.1; override them when something else on this machine holds them.
  NEURON_OPERATOR_METRICS_PORT=${NEURON_OPERATOR_METRICS_PORT:-18080} NEURON_OPERATOR_METRICS_ADDRESS=127.0.0.1 \
    nohup neuron-operator run --namespace=default --standalone \
    --liveness="http://127.0.0.1:${DEMO_LIVENESS_PORT:-18081}/healthz" \
    >"$D/operator.log" 2>&1 &
  echo $! >"$D/operator.pid"
  echo "operator pid $(cat "$D/operator.pid")"
fi

# Apply one example and print each change of its phase until it is Ready.
apply_and_watch() {
  local file=$1 name=$2 start last="" row
  say "kubectl apply -f examples/$file"
  start=$(date +%s.%N)
  kubectl apply -f "$ROOT/examples/$file"
  for _ in $(seq 1 600); do
    row=$(kubectl get nis "$name" -o jsonpath='{.status.phase} stack={.status.artifact.stack} compiled={.status.conditions[?(@.type=="Compiled")].reason} ready={.status.conditions[?(@.type=="Ready")].status} replicas={.status.readyReplicas}/{.spec.replicas}' 2>/dev/null || true)
    if [ "$row" != "$last" ]; then
      printf '  +%5.1fs  %s\n' "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$row"
      last=$row
    fi
    case "$row" in Ready*) break ;; esac
    sleep 0.2
  done
  kubectl wait --for=condition=Ready "nis/$name" --timeout=120s
}

say "runtime stacks (neuron-operator stacks)"
neuron-operator stacks

apply_and_watch llama.yaml llama-3-8b
# The current stack for Trn2/Trn3: compiled on a CPU node (no Trainium held to compile), served cache-hit-only.
apply_and_watch llama-70b-trn2-vllm-neuron.yaml llama-70b
say "where llama-70b compiled (a CPU node) and serves (trn2)"
kubectl get pods -l "inference.neuron-operator.io/artifact-key=$(kubectl get nis llama-70b -o jsonpath='{.status.artifact.key}')" \
  -o custom-columns='POD:.metadata.name,NODE:.spec.nodeName,NEURON-DEVICES:.spec.containers[0].resources.limits.aws\.amazon\.com/neuron,PHASE:.status.phase'

say "what the operator created"
kubectl get nis
kubectl get jobs,deployments,services,poddisruptionbudgets,pods -l app.kubernetes.io/managed-by=neuron-operator -o wide
say "events"
kubectl get events --field-selector involvedObject.kind=NeuronInferenceService --sort-by=.lastTimestamp
say "endpoint"
echo "OpenAI-compatible endpoint: $(kubectl get nis llama-3-8b -o jsonpath='{.status.endpoint}')"
echo "compiled artifact:          $(kubectl get nis llama-3-8b -o jsonpath='{.status.artifact.location}')"
cat <<MSG

The cluster and operator keep running. Try:
  export KUBECONFIG=$KUBECONFIG PATH=$BIN:\$PATH
  kubectl scale nis/llama-3-8b --replicas=3          # no recompile (the third replica waits for a node)
  kubectl patch nis/llama-3-8b --type=merge -p '{"spec":{"engine":{"maxModelLen":8192}}}'   # compiles first (on a lent replica's node), then rolls
  make cluster-down                                  # stops everything
MSG
