#!/usr/bin/env bash
# A k3d (k3s in Docker) cluster whose containerd runs containerd-shim-wasm-v1, then the pods of
# wasm-pods.yaml. Needs Docker, k3d and kubectl, and a static (musl) shim: k3s has no libc.
#   K3S_IMAGE=rancher/k3s:v1.30.6-k3s1 test/k8s/k3d.sh   (k3s <= 1.30: containerd 1.7)
#   K3S_IMAGE=rancher/k3s:v1.31.2-k3s1 test/k8s/k3d.sh   (k3s >= 1.31: containerd 2.x)
source "$(dirname "$0")/lib.sh"
CLUSTER=${CLUSTER:-wasm-shim}
K3S_IMAGE=${K3S_IMAGE:-rancher/k3s:v1.30.6-k3s1}
build_shim

minor=$(echo "$K3S_IMAGE" | sed -E 's/.*:v1\.([0-9]+).*/\1/')
if [ "$minor" -ge 31 ]; then TMPL=config-v3.toml.tmpl; else TMPL=config.toml.tmpl; fi

k3d cluster delete "$CLUSTER" >/dev/null 2>&1 || true
k3d cluster create "$CLUSTER" --image "$K3S_IMAGE" --wait \
  --volume "$SHIM:/bin/containerd-shim-wasm-v1@server:0" \
  --volume "$ROOT/deploy/k3s/$TMPL:/var/lib/rancher/k3s/agent/etc/containerd/$TMPL@server:0"
[ -n "${KEEP:-}" ] || trap 'k3d cluster delete "$CLUSTER"' EXIT
k3d image import "$OUT/guests.tar" --cluster "$CLUSTER"
check_pods
echo "k3d: all checks passed"
