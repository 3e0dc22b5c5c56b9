#!/usr/bin/env bash
# make demo: a private containerd (own socket, root and state under a temp dir), wasm images
# built from test/guests and imported with `ctr image import`, then, each step timed:
#   1. ctr run --rm --runtime io.containerd.wasm.v1 docker.io/library/hello-wasm:latest demo
#      (a wasm command: its output and exit status);
#   2. ctr run -d … a wasi:http function (a component, one instance per request) serving HTTP
#      on 127.0.0.1, answered by curl;
#   3. ctr task kill (SIGTERM): it drains and exits 0;
# and containerd is stopped again. Needs root (containerd does).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
shim_dir="$here/target/release"
wasm="$here/test/guests/target/wasm32-wasip1/release/hello.wasm"
[ -x "$shim_dir/containerd-shim-wasm-v1" ] || { echo "build first: make build" >&2; exit 1; }
[ -f "$wasm" ] || { echo "build the guests first: make guests" >&2; exit 1; }
[ -x "$shim_dir/guest-file" ] || { echo "build the demo's tools first: make demo" >&2; exit 1; }

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
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
"$shim_dir/wasm-image" build --name docker.io/library/hello-wasm:latest --wasm "$wasm" --path /hello.wasm -o "$tmp/hello-wasm.tar" >/dev/null
# The wasi:http guest of the test suite (test/guests/http), a wasi:http/proxy component.
"$shim_dir/guest-file" http "$tmp/fn.wasm"
"$shim_dir/wasm-image" build --name docker.io/library/fn-wasm:latest --wasm "$tmp/fn.wasm" --path /fn.wasm -o "$tmp/fn-wasm.tar" >/dev/null
ctr image import "$tmp/hello-wasm.tar" >/dev/null
ctr image import "$tmp/fn-wasm.tar" >/dev/null

echo "\$ ctr run --rm --runtime io.containerd.wasm.v1 docker.io/library/hello-wasm:latest demo"
t=$(date +%s%N)
status=0
ctr run --rm --runtime io.containerd.wasm.v1 docker.io/library/hello-wasm:latest demo || status=$?
echo "(exit status $status, $(ms "$t") ms)"
[ "$status" -eq 0 ]

# A function: a wasi:http/proxy component (compiled once, one instance per request; the shim
# sees that it exports wasi:http/incoming-handler and serves it), on a free loopback port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 18080)
echo
echo "\$ ctr run -d --net-host --runtime io.containerd.wasm.v1 --annotation wasm.containerd.io/http-port=$port docker.io/library/fn-wasm:latest fn"
t=$(date +%s%N)
ctr run -d --net-host --runtime io.containerd.wasm.v1 \
  --annotation "wasm.containerd.io/http-port=$port" \
  docker.io/library/fn-wasm:latest fn >/dev/null
url="http://127.0.0.1:$port/"
reply=""
for _ in $(seq 200); do reply="$(curl -s -i --max-time 2 "$url" 2>/dev/null)" && [ -n "$reply" ] && break; sleep 0.05; done
echo "(first answer after $(ms "$t") ms)"
echo "\$ curl -i $url"
printf '%s\n' "$reply" | tr -d '\r' | sed 's/^/  /'
printf '%s' "$reply" | head -1 | grep -q " 200" || { echo "the function did not answer 200" >&2; exit 1; }

echo
echo "\$ ctr task kill fn   # SIGTERM: drains requests in flight, exits 0"
t=$(date +%s%N)
ctr task kill fn
for _ in $(seq 100); do ctr task ls 2>/dev/null | grep -q "^fn .*STOPPED" && break; sleep 0.05; done
# ctr 1.6 reports a non-zero exit status when it deletes the task, and says nothing for 0.
said=$(ctr task delete fn 2>&1 || true)
code=$(printf '%s' "$said" | grep -o 'exit code [0-9]*' | grep -o '[0-9]*$' || echo 0)
ctr container rm fn >/dev/null 2>&1 || true
echo "(stopped, exit status $code, $(ms "$t") ms)"
[ "$code" -eq 0 ]
