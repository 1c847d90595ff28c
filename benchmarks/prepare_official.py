"""Make a local checkout of the official StyleGAN-NADA code run on a CPU, for step_time.py --official.

    git clone https://github.com/rinongal/StyleGAN-nada /tmp/StyleGAN-nada
    python benchmarks/prepare_official.py /tmp/StyleGAN-nada

Edits the checkout in place (never copy it into this repository): the op modules compile their CUDA
extensions at import time, which needs nvcc and a GPU; without the compiled module their own CPU fallbacks
(native upfirdn2d, plain leaky ReLU, plain convolutions) serve. Its hard-coded 'cuda:0' devices become 'cpu'.
Nothing else changes: the model, losses and layer selection are the official ones.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# name = load(... sources=[...] ...)  ->  name = None   (the call spans several lines and ends at ")\n";
# some files have CRLF line ends, which are kept)
_LOAD_CALL = re.compile(r"^(\w+) = load\(\r?\n.*?^\)(\r?\n)", re.MULTILINE | re.DOTALL)


def prepare(root: Path) -> list[str]:
    zssgan = root / "ZSSGAN"
    if not (zssgan / "model" / "ZSSGAN.py").is_file():
        raise SystemExit(f"{root}: not a StyleGAN-nada checkout (no ZSSGAN/model/ZSSGAN.py)")
    changed = []
    for name in ("fused_act.py", "upfirdn2d.py"):
        path = zssgan / "op" / name
        text = path.read_bytes().decode()
        new = _LOAD_CALL.sub(lambda m: f"{m.group(1)} = None  # CUDA extension not built: CPU fallback{m.group(2)}",
                             text)
        if new != text:
            path.write_bytes(new.encode())
            changed.append(str(path))
    path = zssgan / "model" / "ZSSGAN.py"
    text = path.read_bytes().decode()
    new = text.replace("'cuda:0'", "'cpu'")
    if new != text:
        path.write_bytes(new.encode())
        changed.append(str(path))
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for line in prepare(Path(sys.argv[1])) or ["already prepared"]:
        print(line)
