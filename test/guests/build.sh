#!/bin/sh
# Builds the Rust test guests for wasm32-wasip1 (WAT guests and the component are made by the
# e2e harness itself, from wat/*.wat and hello.wasm).
set -eu
cd "$(dirname "$0")"
exec cargo build --release --target wasm32-wasip1 "$@"
