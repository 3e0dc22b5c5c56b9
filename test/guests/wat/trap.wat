;; Traps on purpose, two calls deep, after writing a marker into its memory: `_start` calls
;; `$compute`, which calls `$explode`, which executes `unreachable`. The trap message names
;; `explode` and its wasm offset; with wasm.containerd.io/coredump-dir the core dump holds the
;; memory with the marker "core-dump-marker".
(module
  (memory (export "memory") 1)
  (data (i32.const 64) "core-dump-marker")
  (func $explode (param i32)
    (i32.store (i32.const 128) (local.get 0))
    unreachable)
  (func $compute
    (call $explode (i32.const 7)))
  (func (export "_start")
    (call $compute)))
