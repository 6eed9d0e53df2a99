#!/usr/bin/env bash
# The local test control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as
# loopback-only processes, with simulated Trainium/Inferentia nodes from the instance catalog.
#
#   hack/cluster.sh up       start (idempotent: a healthy cluster is reused, a half-started one is cleaned up)
#   hack/cluster.sh down     stop every process by its pid file and wipe the state
#   hack/cluster.sh status   show processes, API health and nodes
#   hack/cluster.sh restart-apiserver [SECONDS]
#                            SIGKILL kube-apiserver (unless already dead), keep it down SECONDS (default 0), start it
#                            again with the same flags and wait for /readyz (the failure suite's API server restart)
#
# State, logs and pid files live in $TESTENV_DIR (default .testenv/); kubeconfig: $TESTENV_DIR/kubeconfig.
# Ports are configurable: TESTENV_ETCD_PORT, TESTENV_ETCD_PEER_PORT, TESTENV_APISERVER_PORT,
# TESTENV_KCM_PORT, TESTENV_SCHEDULER_PORT (keep them below 32768, Linux's ephemeral port range, or an outgoing
# connection may hold one). Nodes: TESTENV_NODES='trn1.32xlarge=2,...' (default: catalog).
# Scale: the Service range is a /16 (10.0.0.1, the kubernetes Service, stays in the certificate), so thousands of
# Services fit; kwok's client is unthrottled and nodes allow 110 pods. TESTENV_DISABLE_QPS_LIMITS=1 lifts the
# controller-manager's and scheduler's client rate limits (20 and 50 requests/s by default), as kwokctl's
# --disable-qps-limits does, for benchmarks whose floor should not be those two clients.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=${TESTENV_DIR:-$ROOT/.testenv}
ETCD_PORT=${TESTENV_ETCD_PORT:-23790}
ETCD_PEER_PORT=${TESTENV_ETCD_PEER_PORT:-23800}
API_PORT=${TESTENV_APISERVER_PORT:-16443}
KCM_PORT=${TESTENV_KCM_PORT:-20257}
SCHED_PORT=${TESTENV_SCHEDULER_PORT:-20259}
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
SERVICE_CIDR=10.0.0.0/16
PYTHON=${PYTHON:-python3}
log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bin_dir() { "$ROOT/hack/testenv-build.sh" | tail -1; }

alive() { local f="$D/$1.pid"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }
# A killed process whose parent (this script's earlier run) is gone may linger as a zombie until reaped.
gone() { ! kill -0 "$1" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }

stop_all() {
  # Reverse start order: kwok first, etcd last, each by its own pid.
  local i c pid
  for ((i=${#COMPONENTS[@]}-1; i>=0; i--)); do
    c=${COMPONENTS[$i]}
    [ -f "$D/$c.pid" ] || continue
    pid=$(cat "$D/$c.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      log "stopped $c (pid $pid)"
    fi
    rm -f "$D/$c.pid"
  done
}

healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  [ -f "$D/kubeconfig" ] && "$BIN/kubectl" --kubeconfig="$D/kubeconfig" get --raw=/readyz >/dev/null 2>&1
}

make_pki() {
  local p=$D/pki
  [ -f "$p/done" ] && return 0
  rm -rf "$p"; mkdir -p "$p"
  (
    cd "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=neuron-operator-testenv-ca 2>/dev/null
    cert() { # name subject extensions
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%s\n' "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    }
    cert apiserver /CN=kube-apiserver "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cert admin "/O=system:masters/CN=testenv-admin" "extendedKeyUsage=clientAuth"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    touch done
  )
}

# The aggregation layer (an APIService such as custom.metrics.k8s.io served by a process of ours): the API server
# authenticates to aggregated servers with a front-proxy client certificate from its own CA, which those servers
# trust for the X-Remote-User/-Group headers (kube-system/extension-apiserver-authentication). Kept apart from
# make_pki so an existing .testenv/pki gains it without new cluster certificates.
make_front_proxy_pki() {
  local p=$D/pki
  [ -f "$p/front-proxy-done" ] && return 0
  (
    cd "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout front-proxy-ca.key -out front-proxy-ca.crt -days 3650 \
      -subj /CN=neuron-operator-testenv-front-proxy-ca 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr \
      -subj /CN=front-proxy-client 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > front-proxy-client.ext
    openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key -CAcreateserial \
      -days 3650 -extfile front-proxy-client.ext -out front-proxy-client.crt 2>/dev/null
    touch front-proxy-done
  )
}

write_kubeconfig() {
  local kc=$D/kubeconfig k="$BIN/kubectl"
  rm -f "$kc"
  $k config --kubeconfig="$kc" set-cluster testenv --server="https://127.0.0.1:$API_PORT" --certificate-authority="$D/pki/ca.crt" --embed-certs >/dev/null
  $k config --kubeconfig="$kc" set-credentials admin --client-certificate="$D/pki/admin.crt" --client-key="$D/pki/admin.key" --embed-certs >/dev/null
  $k config --kubeconfig="$kc" set-context testenv --cluster=testenv --user=admin >/dev/null
  $k config --kubeconfig="$kc" use-context testenv >/dev/null
}

start() { # name cmd...
  local name=$1; shift
  nohup "$@" >"$D/$name.log" 2>&1 &
  echo $! >"$D/$name.pid"
}

wait_for() { # component timeout-seconds command...
  local what=$1 timeout=$2 start=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ -f "$D/$what.pid" ] && ! alive "$what"; then
      log "$what exited; last lines of $D/$what.log:"; tail -5 "$D/$what.log" >&2; return 1
    fi
    if (( SECONDS - start > timeout )); then log "timed out waiting for $what"; return 1; fi
    sleep 0.5
  done
  log "$what ready after $((SECONDS - start))s"
}

start_apiserver() {
  local p=$D/pki
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --client-ca-file="$p/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range=$SERVICE_CIDR --authorization-mode=Node,RBAC --allow-privileged=true \
    --enable-admission-plugins=NodeRestriction,ServiceAccount \
    --requestheader-client-ca-file="$p/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$p/front-proxy-client.crt" --proxy-client-key-file="$p/front-proxy-client.key" \
    --endpoint-reconciler-type=none --profiling=false --v=1
}

up() {
  BIN=$(bin_dir)
  mkdir -p "$D"
  if healthy; then
    log "cluster already running (kubeconfig: $D/kubeconfig)"
    apply_nodes
    return 0
  fi
  log "starting a fresh control plane in $D"
  stop_all
  rm -rf "$D/etcd"
  make_pki
  make_front_proxy_pki
  write_kubeconfig
  local t0=$SECONDS p=$D/pki kc=$D/kubeconfig k="$BIN/kubectl --kubeconfig=$D/kubeconfig"

  start etcd "$BIN/etcd" --name=testenv --data-dir="$D/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="testenv=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --quota-backend-bytes=2147483648 --auto-compaction-retention=1 --log-level=warn
  wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  start_apiserver
  wait_for kube-apiserver 120 $k get --raw=/readyz

  local common=(--kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc"
                --leader-elect=false --bind-address=127.0.0.1 --profiling=false)
  [ -n "${TESTENV_DISABLE_QPS_LIMITS:-}" ] && common+=(--kube-api-qps=5000 --kube-api-burst=10000)
  # --use-service-account-credentials=false: every controller loop uses the admin client, so no per-controller
  # tokens are needed; the serviceaccount-token controller still runs because the signing key is given.
  start kube-controller-manager "$BIN/kube-controller-manager" "${common[@]}" --secure-port="$KCM_PORT" \
    --controllers='*' --use-service-account-credentials=false \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --node-monitor-grace-period=50s --concurrent-gc-syncs=4 --v=1
  start kube-scheduler "$BIN/kube-scheduler" "${common[@]}" --secure-port="$SCHED_PORT" --v=1
  start kwok "$BIN/kwok" --kubeconfig="$kc" --config="$BIN/kwok-stages.yaml" --manage-all-nodes=true \
    --node-lease-duration-seconds=40 --cidr=10.244.0.0/16 --node-ip=10.0.0.1 -v=WARN
  wait_for kube-controller-manager 60 curl -skf "https://127.0.0.1:$KCM_PORT/healthz"
  wait_for kube-scheduler 60 curl -skf "https://127.0.0.1:$SCHED_PORT/healthz"

  apply_nodes
  wait_for "nodes" 120 $k wait --for=condition=Ready nodes --all --timeout=2s
  wait_for "default ServiceAccount" 60 $k get serviceaccount default -n default
  log "control plane up in $((SECONDS - t0))s; export KUBECONFIG=$kc PATH=$BIN:\$PATH"
}

apply_nodes() {
  local nodes=()
  [ -n "${TESTENV_NODES:-}" ] && nodes=(--nodes "$TESTENV_NODES")
  PYTHONPATH="$ROOT/operator${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$ROOT/hack/fake_nodes.py" "${nodes[@]}" \
    | "$BIN/kubectl" --kubeconfig="$D/kubeconfig" apply -f - >/dev/null
}

down() {
  # A demo operator (hack/demo.sh) runs against this cluster: stop it first.
  if [ -f "$D/operator.pid" ]; then
    kill "$(cat "$D/operator.pid")" 2>/dev/null && log "stopped demo operator (pid $(cat "$D/operator.pid"))" || true
    rm -f "$D/operator.pid"
  fi
  stop_all
  rm -rf "$D/etcd"
  log "cluster stopped"
}

restart_apiserver() {
  BIN=$(bin_dir)
  local downtime=${1:-0} pid k="$BIN/kubectl --kubeconfig=$D/kubeconfig"
  [ -f "$D/kube-apiserver.pid" ] || { log "no kube-apiserver pid file in $D: is the cluster up?"; return 1; }
  pid=$(cat "$D/kube-apiserver.pid")
  if alive kube-apiserver; then
    kill -9 "$pid"
    for _ in $(seq 1 100); do gone "$pid" && break; sleep 0.05; done
    log "killed kube-apiserver (pid $pid); down for ${downtime}s"
  fi
  sleep "$downtime"
  mv -f "$D/kube-apiserver.log" "$D/kube-apiserver.log.prev"
  start_apiserver
  wait_for kube-apiserver 120 $k get --raw=/readyz
}

status() {
  BIN=$(bin_dir)
  local c
  for c in "${COMPONENTS[@]}"; do
    if alive "$c"; then
      printf '%-24s running  pid %-8s rss %s KiB\n' "$c" "$(cat "$D/$c.pid")" "$(awk '/VmRSS/{print $2}' "/proc/$(cat "$D/$c.pid")/status")"
    else
      printf '%-24s stopped\n' "$c"
    fi
  done
  if [ -f "$D/kubeconfig" ] && "$BIN/kubectl" --kubeconfig="$D/kubeconfig" get --raw=/readyz >/dev/null 2>&1; then
    "$BIN/kubectl" --kubeconfig="$D/kubeconfig" version 2>/dev/null | sed 's/^/  /'
    "$BIN/kubectl" --kubeconfig="$D/kubeconfig" get nodes \
      -o custom-columns='NAME:.metadata.name,STATUS:.status.conditions[?(@.type=="Ready")].status,TYPE:.metadata.labels.node\.kubernetes\.io/instance-type,NEURON:.status.allocatable.aws\.amazon\.com/neuron,EFA:.status.allocatable.vpc\.amazonaws\.com/efa'
  else
    echo "API server: not reachable"
    return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  restart-apiserver) restart_apiserver "${2:-0}" ;;
  *) echo "usage: $0 up|down|status|restart-apiserver [SECONDS]" >&2; exit 2 ;;
esac
