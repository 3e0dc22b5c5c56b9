# Shared by kind.sh and k3d.sh: build the shim and the test images, then check the pods of
# wasm-pods.yaml. Needs Docker, kubectl and kind or k3d; it cannot run without a Docker engine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/target/k8s"
mkdir -p "$OUT"

# Cluster nodes have their own libc (k3s has none at all): build a static binary with musl when
# the target is installed (`rustup target add x86_64-unknown-linux-musl`), else the host's.
build_shim() {
  cd "$ROOT"
  if rustup target list --installed 2>/dev/null | grep -q '^x86_64-unknown-linux-musl$'; then
    cargo build --release --target x86_64-unknown-linux-musl --bin containerd-shim-wasm-v1
    SHIM="$ROOT/target/x86_64-unknown-linux-musl/release/containerd-shim-wasm-v1"
  else
    echo "warning: no musl target; the shim links the host's glibc, which the node must match" >&2
    cargo build --release --bin containerd-shim-wasm-v1
    SHIM="$ROOT/target/release/containerd-shim-wasm-v1"
  fi
  rustup target list --installed | grep -q wasm32-wasip1 || rustup target add wasm32-wasip1
  cargo build --release --target wasm32-wasip1 --manifest-path test/guests/Cargo.toml
  cargo run --release -p wasm-shim-e2e --bin test-images -- "$OUT"
  export SHIM
}

# Waits for `kubectl $*` to succeed, up to $TIMEOUT seconds (default 180).
retry() {
  local deadline=$((SECONDS + ${TIMEOUT:-180}))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "timed out: $*" >&2; "$@" || true; return 1; fi
    sleep 2
  done
}

check_pods() {
  kubectl apply -f "$ROOT/RuntimeClass.yaml"
  kubectl apply -f "$ROOT/test/k8s/wasm-pods.yaml"
  local fail=0
  retry sh -c 'kubectl get pod wasm-hello -o jsonpath={.status.phase} | grep -qx Succeeded'
  kubectl logs wasm-hello | tee "$OUT/wasm-hello.log"
  grep -q hello "$OUT/wasm-hello.log" || { echo "FAIL: wasm-hello logs"; fail=1; }

  kubectl rollout status deployment/wasm-sidecar --timeout=180s
  retry sh -c 'kubectl logs deployment/wasm-sidecar -c sidecar | grep -q "wasm got: ping"' \
    || { echo "FAIL: the sidecar never reached the wasm server"; fail=1; }
  kubectl logs deployment/wasm-sidecar -c sidecar --tail=3 || true

  retry sh -c 'kubectl logs wasm-client -c wasm-client | grep -q "reply: native got: hello-native"' \
    || { echo "FAIL: the wasm client never reached the native server"; fail=1; }
  kubectl logs wasm-client -c wasm-client || true

  # A wasm container stops on SIGTERM at once, well inside the grace period.
  local t0=$SECONDS
  kubectl delete deployment wasm-sidecar --wait=true --timeout=60s
  retry sh -c '! kubectl get pods -l app=wasm-sidecar -o name | grep -q .'
  echo "wasm-sidecar pod gone after $((SECONDS - t0)) s"
  kubectl delete pod wasm-hello wasm-client --wait=true --timeout=60s || true
  return $fail
}
