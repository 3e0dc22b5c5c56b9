#!/usr/bin/env bash
# A kind cluster whose node runs containerd-shim-wasm-v1, then the pods of wasm-pods.yaml.
# Needs Docker, kind and kubectl (not available on machines without a Docker engine).
#   test/k8s/kind.sh          create the cluster, run the checks, delete the cluster
#   KEEP=1 test/k8s/kind.sh   leave the cluster up
source "$(dirname "$0")/lib.sh"
CLUSTER=${CLUSTER:-wasm-shim}
build_shim

cat > "$OUT/kind.yaml" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraMounts:
      - hostPath: $SHIM
        containerPath: /usr/local/bin/containerd-shim-wasm-v1
containerdConfigPatches:
  - |-
$(sed -n '/^\[plugins/,$p' "$ROOT/deploy/containerd-1.x.toml" | sed 's/^/    /')
YAML

kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --config "$OUT/kind.yaml" --wait 120s
[ -n "${KEEP:-}" ] || trap 'kind delete cluster --name "$CLUSTER"' EXIT
kind load image-archive "$OUT/guests.tar" --name "$CLUSTER"
check_pods
echo "kind: all checks passed"
