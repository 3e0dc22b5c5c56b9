;; Two entry points: `_start` prints "start", `custom` prints "custom export". Run as
;; /custom.wasm#custom, only "custom export" may appear.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\40\00\00\00\06\00\00\00")
  (data (i32.const 16) "\80\00\00\00\0e\00\00\00")
  (data (i32.const 64) "start\n")
  (data (i32.const 128) "custom export\n")
  (func (export "_start")
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "custom")
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 8)))))
