"""Generate raven/v1 Python code from protos/raven/v1 with grpcio-tools.

Usage: python scripts/gen_protos.py [--check]
--check regenerates into a temporary folder and fails if the committed code differs (CI drift check).
"""

from __future__ import annotations

import filecmp
import pathlib
import shutil
import sys
import tempfile

import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
THIRD_PARTY = ROOT / "third_party" / "googleapis"
WELL_KNOWN = pathlib.Path(grpc_tools.__file__).parent / "_proto"


def generate(out: pathlib.Path) -> None:
    files = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "raven" / "v1").glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{THIRD_PARTY}",
        f"-I{WELL_KNOWN}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for pkg in (out / "raven", out / "raven" / "v1"):
        (pkg / "__init__.py").touch()


def main() -> int:
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        generate(out)
        target = ROOT / "raven" / "v1"
        if check:
            cmp = filecmp.dircmp(out / "raven" / "v1", target, ignore=["__pycache__"])
            bad = cmp.left_only + cmp.right_only + cmp.diff_files
            if bad:
                print(f"generated code is out of date: {sorted(bad)}; run `make generate`", file=sys.stderr)
                return 1
            print("generated code is up to date")
            return 0
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(out / "raven" / "v1", target)
        (ROOT / "raven" / "__init__.py").touch()
    print(f"generated {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
