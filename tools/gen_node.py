"""Generate the TypeScript stubs of the Node client from proto/ (or check them).

ts-proto runs as a protoc plugin under the ``protoc`` that grpcio-tools ships, so the Python
and the TypeScript stubs come from one protoc and the npm ``grpc-tools`` binary (which cannot
be downloaded everywhere) is not needed. The plugin itself comes from the Node client's
``node_modules`` (``npm ci`` in clients/node, which ``make node-deps`` runs). Only the public
contract is generated: the snapshot format is the server's own business. Beside it, the
standard error details (google.rpc.Status and error_details.proto, copied verbatim from
googleapis into clients/node/proto) that the client decodes from grpc-status-details-bin.

    python tools/gen_node.py          # regenerate clients/node/src/gen
    python tools/gen_node.py --check  # exit 1 when committed stubs drift
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from drift import drifted  # tools/ is on sys.path: these run as scripts
from grpc_tools import protoc
from pinned_protoc import require_pinned_protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
NODE_ROOT = ROOT / "clients" / "node"
OUT = NODE_ROOT / "src" / "gen"
PLUGIN = NODE_ROOT / "node_modules" / ".bin" / "protoc-gen-ts_proto"
#: googleapis' google/rpc protos, vendored: Python has them from googleapis-common-protos.
VENDORED_ROOT = NODE_ROOT / "proto"
PROTOS = [
    "dispatchd/v1/dispatcher.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
]
#: grpc-js service definitions, Buffer for bytes, Date for timestamps, oneofs as tagged unions
#: (``{$case, value}``) so TypeScript narrows them; no JSON codecs (the wire is binary).
OPTIONS = ",".join(
    [
        "outputServices=grpc-js",
        "env=node",
        "esModuleInterop=true",
        "oneof=unions-value",
        "outputJsonMethods=false",
    ]
)


def generate(into: Path) -> None:
    if not PLUGIN.exists():
        raise SystemExit(
            f"{PLUGIN.relative_to(ROOT)} is missing: install the Node client's dependencies "
            "with `make node-deps` (npm ci in clients/node)"
        )
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    into.mkdir(parents=True, exist_ok=True)
    code = protoc.main(
        [
            "protoc",
            f"--plugin=protoc-gen-ts_proto={PLUGIN}",
            f"-I{PROTO_ROOT}",
            f"-I{VENDORED_ROOT}",
            f"-I{well_known}",
            f"--ts_proto_out={into}",
            f"--ts_proto_opt={OPTIONS}",
            *PROTOS,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc with ts-proto failed with exit code {code}")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        generate(fresh)
        committed = _files(OUT) if OUT.exists() else set()
        names = _files(fresh) | committed
        stale = drifted(fresh, OUT, names)
    if stale:
        print(f"generated TypeScript drifts from proto/: {', '.join(stale)}; run `make gen`")
        return 1
    print("generated TypeScript matches proto/")
    return 0


def main() -> int:
    require_pinned_protoc()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when stubs drift")
    args = parser.parse_args()
    if args.check:
        return check()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        generate(fresh)  # into a temp dir first, so a failed run leaves the old stubs
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(fresh, OUT)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
