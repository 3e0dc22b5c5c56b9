;; Wasm GC: a linked list of three `struct`s allocated with `struct.new` in the GC heap, walked
;; with `struct.get` and `ref.cast`, summing 1 + 2 + 3; prints "gc sum 6" through WASI preview 1
;; (exit 0). Winch (the baseline compiler) cannot compile it: the shim compiles it with
;; Cranelift at once and caches that.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (type $node (struct (field $value i32) (field $next (ref null $node))))
  (memory (export "memory") 1)
  ;; iovec at 0: { buf = 16, len = 9 }.
  (data (i32.const 0) "\10\00\00\00\09\00\00\00")
  (data (i32.const 16) "gc sum ?\n")
  (func $list (result (ref null $node))
    (struct.new $node (i32.const 1)
      (struct.new $node (i32.const 2)
        (struct.new $node (i32.const 3) (ref.null $node)))))
  (func $sum (param $l (ref null $node)) (result i32)
    (local $total i32)
    (block $done
      (loop $next
        (br_if $done (ref.is_null (local.get $l)))
        (local.set $total (i32.add (local.get $total) (struct.get $node $value (local.get $l))))
        (local.set $l (struct.get $node $next (ref.cast (ref $node) (local.get $l))))
        (br $next)))
    (local.get $total))
  (func (export "_start")
    (i32.store8 (i32.const 23) (i32.add (i32.const 48) (call $sum (call $list))))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
