;; Wasm exception handling (the standard `try_table`/`throw`/`exnref` encoding that wasi-sdk's
;; C++ and LLVM emit): `_start` throws a tag carrying 42 from a nested call, catches it, and
;; prints "caught 42" through WASI preview 1 (exit 0). Winch (the baseline compiler) cannot
;; compile it: the shim compiles it with Cranelift at once and caches that.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; iovec at 0: { buf = 16, len = 10 }.
  (data (i32.const 0) "\10\00\00\00\0a\00\00\00")
  (data (i32.const 16) "caught ??\n")
  (tag $oops (param i32))
  (func $deep (param $n i32)
    (throw $oops (local.get $n)))
  (func $thrower
    (call $deep (i32.const 42)))
  (func (export "_start")
    (local $v i32)
    (block $handler (result i32)
      (try_table (catch $oops $handler)
        (call $thrower))
      ;; Not reached: the throw skips it.
      (unreachable))
    (local.set $v)
    ;; Two decimal digits of the caught value.
    (i32.store8 (i32.const 23) (i32.add (i32.const 48) (i32.div_u (local.get $v) (i32.const 10))))
    (i32.store8 (i32.const 24) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
