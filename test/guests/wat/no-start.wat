;; A valid module with no `_start` export: running it without `#export` must fail cleanly.
(module
  (memory (export "memory") 1)
  (func (export "not_start") (result i32) (i32.const 7)))
