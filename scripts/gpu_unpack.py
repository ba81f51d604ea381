"""Reassemble a model packed by ``scripts/gpu_train.py`` (tar pieces, float16) as float32.

python scripts/gpu_unpack.py DIR_WITH_PIECES NAME OUT_PARENT   # -> OUT_PARENT/NAME/
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

from safetensors.torch import load_file, save_file


def unpack(pieces_dir: Path, name: str, out_parent: Path) -> Path:
    """Joins ``NAME.tar.partNN`` pieces, extracts them and turns the weights back to float32."""
    pieces = sorted(pieces_dir.glob(f"{name}.tar.part*"))
    if not pieces:
        raise SystemExit(f"no {name}.tar.part* in {pieces_dir}")
    data = b"".join(p.read_bytes() for p in pieces)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(out_parent, filter="data")
    target = out_parent / name
    for f in target.rglob("*.safetensors"):
        w = load_file(str(f))
        save_file(
            {k: v.float().contiguous() if v.is_floating_point() else v for k, v in w.items()},
            str(f),
            metadata={"format": "pt"},
        )
    return target


if __name__ == "__main__":
    print(unpack(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
