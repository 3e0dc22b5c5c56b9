"""A small CPython command for the third-party trials (wasi:cli/command, built with componentize-py).

What it does, so that the shim and the reference runner (wasmtime 48) can be compared line by line:
prints its interpreter version, its arguments, two environment variables, the working directory,
a directory listing and a file named by the first argument (with its SHA-256), what it read from
stdin, a line on stderr, then exits with the code in the EXIT_CODE variable (0 when unset).
"""

import hashlib
import os
import sys

import wit_world
from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        print(f"python {sys.version_info.major}.{sys.version_info.minor} on {sys.platform}")
        print(f"argv[1:] = {sys.argv[1:]!r}")
        for name in ("GREETING", "EXIT_CODE"):
            print(f"env {name} = {os.environ.get(name)!r}")
        print(f"cwd = {os.getcwd()}")
        if len(sys.argv) > 1:
            path = sys.argv[1]
            with open(path, "rb") as f:
                data = f.read()
            folder = os.path.dirname(path) or "."
            print(f"ls {folder} = {sorted(os.listdir(folder))!r}")
            print(f"{path}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
            print(f"{path} first line: {data.splitlines()[0].decode() if data else ''}")
        text = sys.stdin.read()
        words = text.split()
        print(f"stdin: {len(text)} chars, {len(words)} words, upper: {text.strip().upper()!r}")
        print("a line on stderr from CPython", file=sys.stderr)
        sys.stdout.flush()
        code = int(os.environ.get("EXIT_CODE", "0"))
        if code:
            # componentize-py ends the component with wasi:cli/exit; what code reaches the host is
            # what the trial compares (wasmtime 48 is the reference).
            sys.exit(code)
