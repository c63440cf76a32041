# -*- test-case-name: test.unit.test_rustdesk_proto -*-
"""Regenerate the C{*_pb2.py} modules from the C{.proto} files beside this module.

Run C{python -m p2pnet.codecs.proto.generate} after editing a C{.proto} file. It needs
C{grpcio-tools} (the C{test} extra), which bundles C{protoc}.
"""

from __future__ import annotations

import os
import sys

__all__ = ["HERE", "PROTOS", "generate"]

#: The directory holding the C{.proto} files and the generated modules.
HERE = os.path.dirname(os.path.abspath(__file__))

#: The C{.proto} files, by name, in generation order.
PROTOS: tuple[str, ...] = ("rendezvous.proto", "message.proto")


def generate(outDir: str = HERE) -> None:
    """Write C{NAME_pb2.py} for every file in L{PROTOS} into C{outDir}.

    @raise ImportError: C{grpcio-tools} is not installed.
    @raise RuntimeError: C{protoc} reported an error.
    """
    from grpc_tools import protoc  # type: ignore[import-untyped]

    for name in PROTOS:
        status = protoc.main(["protoc", f"-I{HERE}", f"--python_out={outDir}", name])
        if status != 0:
            raise RuntimeError(f"protoc failed on {name} (status {status})")


if __name__ == "__main__":
    generate(sys.argv[1] if len(sys.argv) > 1 else HERE)
