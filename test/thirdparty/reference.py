"""The reference runner of the third-party trials: wasmtime 48 (the PyPI `wasmtime==48.0.0`
package, the C API of wasmtime 48 with WASI preview 1 and preview 2) runs a program the way the
`wasmtime run` CLI would, so the e2e trials can compare the shim's output with it.

    reference.py [--dir HOST::GUEST]... [--env K=V]... [--stdin FILE] [--argv0 NAME]
                 [--cache-dir DIR] [--compiler winch|cranelift]
                 --stdout FILE --stderr FILE --status FILE  PROGRAM.wasm[#EXPORT] [ARG]...

argv[0] is PROGRAM as given unless --argv0 names it (the guest path, e.g. /app.wasm, as the
shim passes it). A core module runs its `_start` (or `_initialize` then EXPORT) with WASI
preview 1; a component runs `wasi:cli/run@0.2.x#run` with WASI preview 2. The exit status is written to the --status file as the `wasmtime` CLI reports
it: the guest's code for an explicit exit, 1 when `run` returns an error, 125 for a trap (the
shim's contract; the CLI itself prints the trap and exits 128+SIGABRT there).

Compiler: Winch (wasmtime's baseline compiler) by default, `--compiler cranelift` (or
THIRDPARTY_REFERENCE_COMPILER=cranelift) for the optimizing one `wasmtime run` uses. What is
compared is what the programs print and write, which does not depend on the compiler; Winch
compiles the 18-24 MB programs here in 6-11 s where Cranelift takes 40-75 s on 2 cores (both
are cached in --cache-dir after the first time).

`wasi:http` handlers cannot be driven here (the C API has no incoming-request constructor):
the trials compare those with fixed expected responses.
"""

import argparse
import os
import sys

import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as ffi


def wasi_config(args: argparse.Namespace) -> wasmtime.WasiConfig:
    cfg = wasmtime.WasiConfig()
    cfg.argv = [args.argv0 or args.program] + args.args
    cfg.env = [kv.split("=", 1) for kv in args.env]
    if args.stdin:
        cfg.stdin_file = args.stdin
    cfg.stdout_file = args.stdout
    cfg.stderr_file = args.stderr
    for d in args.dir:
        host, _, guest = d.partition("::")
        cfg.preopen_dir(host, guest or host)
    return cfg


def engine(cache_dir: str | None, compiler: str) -> wasmtime.Engine:
    config = wasmtime.Config()
    config.wasm_component_model = True
    if compiler == "winch":
        # wasmtime-py 48 names only "auto" and "cranelift"; its libwasmtime has Winch, which the
        # C API selects as strategy 2 (WASMTIME_STRATEGY_WINCH).
        ffi.wasmtime_config_strategy_set(config.ptr(), 2)
    elif compiler != "cranelift":
        raise SystemExit(f"reference: unknown compiler {compiler!r}")
    if cache_dir:
        # wasmtime's own compile cache (a 18 MB CPython component takes ~30 s to compile here).
        os.makedirs(cache_dir, exist_ok=True)
        toml = os.path.join(cache_dir, "config.toml")
        with open(toml, "w") as f:
            f.write(f'[cache]\ndirectory = "{os.path.abspath(cache_dir)}"\n')
        config.cache = toml
    return wasmtime.Engine(config)


def run_module(eng: wasmtime.Engine, data: bytes, args: argparse.Namespace, export: str) -> int:
    module = wasmtime.Module(eng, data)
    linker = wasmtime.Linker(eng)
    linker.define_wasi()
    store = wasmtime.Store(eng)
    store.set_wasi(wasi_config(args))
    try:
        instance = linker.instantiate(store, module)
        exports = instance.exports(store)
        # A reactor's `_initialize` runs before a named export (as `wasmtime run --invoke`
        # does); an export's i32 result is the exit status (the shim's `#export` contract).
        if export != "_start" and "_initialize" in exports:
            exports["_initialize"](store)
        result = exports[export](store)
    except wasmtime.ExitTrap as e:
        return e.code
    except wasmtime.Trap as e:
        print(f"reference: trap: {e}", file=sys.stderr)
        return 125
    return result if isinstance(result, int) else 0


def run_component(eng: wasmtime.Engine, data: bytes, args: argparse.Namespace, export: str) -> int:
    if export != "_start":
        raise SystemExit("reference: a named export of a component is not supported here")
    component = wc.Component(eng, data)
    linker = wc.Linker(eng)
    linker.add_wasip2()
    store = wasmtime.Store(eng)
    store.set_wasi(wasi_config(args))
    instance = linker.instantiate(store, component)
    run_iface = None
    for version in range(0, 20):
        run_iface = instance.get_export_index(store, f"wasi:cli/run@0.2.{version}")
        if run_iface is not None:
            break
    if run_iface is None:
        raise SystemExit("reference: the component exports no wasi:cli/run@0.2.x")
    run_idx = instance.get_export_index(store, "run", run_iface)
    run = instance.get_func(store, run_idx)
    try:
        result = run(store)
        run.post_return(store)
    except wasmtime.ExitTrap as e:
        return e.code
    except wasmtime.WasmtimeError as e:
        # wasi:cli/exit reaches here as an error naming the status (`Exited with i32 exit
        # status N`); anything else is a trap.
        text = str(e)
        marker = "exit status "
        if marker in text:
            return int(text.split(marker, 1)[1].split()[0])
        print(f"reference: trap: {text}", file=sys.stderr)
        return 125
    # `run: func() -> result`: Err is exit status 1, as the CLI reports it.
    # `run: func() -> result`: an Err is exit status 1, as the CLI reports it.
    return 1 if getattr(result, "tag", "ok") == "err" else 0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--stdin")
    p.add_argument("--stdout", required=True)
    p.add_argument("--stderr", required=True)
    p.add_argument("--status", required=True)
    p.add_argument("--argv0")
    p.add_argument("--cache-dir")
    p.add_argument("--compiler", default=os.environ.get("THIRDPARTY_REFERENCE_COMPILER", "winch"))
    p.add_argument("program")
    p.add_argument("args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    program, _, export = args.program.partition("#")
    with open(program, "rb") as f:
        data = f.read()
    eng = engine(args.cache_dir, args.compiler)
    is_component = data[4:8] != b"\x01\x00\x00\x00"
    code = (run_component if is_component else run_module)(eng, data, args, export or "_start")
    with open(args.status, "w") as f:
        f.write(f"{code}\n")


if __name__ == "__main__":
    main()
