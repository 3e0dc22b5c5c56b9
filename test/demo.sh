#!/usr/bin/env bash
# make demo: a private containerd (own socket, root and state under a temp dir), a wasm image
# built from test/guests' hello and imported with `ctr image import`, then
#   ctr run --rm --runtime io.containerd.wasm.v1 docker.io/library/hello-wasm:latest demo
# and containerd is stopped again. Needs root (containerd does).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
shim_dir="$here/target/release"
wasm="$here/test/guests/target/wasm32-wasip1/release/hello.wasm"
[ -x "$shim_dir/containerd-shim-wasm-v1" ] || { echo "build first: make build" >&2; exit 1; }
[ -f "$wasm" ] || { echo "build the guests first: make guests" >&2; exit 1; }

tmp="$(mktemp -d /tmp/wasm-demo.XXXXXX)"
sock="$tmp/containerd.sock"
cat > "$tmp/config.toml" <<TOML
version = 2
root = "$tmp/root"
state = "$tmp/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
TOML

PATH="$shim_dir:$PATH" containerd --config "$tmp/config.toml" >"$tmp/containerd.log" 2>&1 &
cpid=$!
cleanup() {
  kill "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
  grep -o " $tmp[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  [ -n "${KEEP_TMP:-}" ] && cp "$tmp/containerd.log" /tmp/demo-containerd.log; rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "containerd did not start; its log:" >&2; cat "$tmp/containerd.log" >&2; exit 1; }

ctr() { command ctr --address "$sock" --namespace demo "$@"; }
"$shim_dir/wasm-image" build --name docker.io/library/hello-wasm:latest --wasm "$wasm" --path /hello.wasm -o "$tmp/hello-wasm.tar" >/dev/null
ctr image import "$tmp/hello-wasm.tar" >/dev/null
echo "\$ ctr run --rm --runtime io.containerd.wasm.v1 docker.io/library/hello-wasm:latest demo"
ctr run --rm --runtime io.containerd.wasm.v1 docker.io/library/hello-wasm:latest demo
echo "(exit status $?)"
