"""Make a local checkout of the official StyleGAN-NADA code run on a CPU, for step_time.py --official and
official_parity.py, and load it with our tiny CLIP files.

    git clone https://github.com/rinongal/StyleGAN-nada /tmp/StyleGAN-nada
    python benchmarks/prepare_official.py /tmp/StyleGAN-nada

Edits the checkout in place (never copy it into this repository):
- the op modules compile their CUDA extensions at import time, which needs nvcc and a GPU; without the
  compiled module their own CPU fallbacks (native upfirdn2d, plain leaky ReLU, plain convolutions) serve;
- its hard-coded 'cuda:0' devices become 'cpu';
- the W+ search of its layer selection starts from `torch.Tensor(w0.cpu().numpy())`, a copy on a GPU but on
  a CPU a view of w0's own memory: SGD then moves w0 with the codes, every index's movement is 0 and the
  chosen layers are arbitrary. A `.clone()` there makes the CPU do what the GPU does.
Nothing else changes: the model, losses and layer selection are the official ones.
"""

from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path

# name = load(... sources=[...] ...)  ->  name = None   (the call spans several lines and ends at ")\n";
# some files have CRLF line ends, which are kept)
_LOAD_CALL = re.compile(r"^(\w+) = load\(\r?\n.*?^\)(\r?\n)", re.MULTILINE | re.DOTALL)
_W_PLUS_START = "torch.Tensor(initial_w_codes.cpu().detach().numpy())"


def prepare(root: Path) -> list[str]:
    zssgan = _zssgan(root)
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
    if _W_PLUS_START not in text:
        raise SystemExit(f"{path}: the W+ search's start point ({_W_PLUS_START}) is not where it was; "
                         "check this script against that version of the code")
    new = text.replace("'cuda:0'", "'cpu'")
    if _W_PLUS_START + ".clone()" not in new:
        new = new.replace(_W_PLUS_START, _W_PLUS_START + ".clone()")
    if new != text:
        path.write_bytes(new.encode())
        changed.append(str(path))
    return changed


def official_part_prompts(root: Path) -> list[str]:
    """The reference's part prompts (`part_templates`), read from the checkout: never kept in this repository."""
    path = _zssgan(root) / "utils" / "text_templates.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "part_templates" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise SystemExit(f"{path}: no part_templates list")


def load_official(root: Path, clip_files: dict[str, Path]) -> None:
    """Make `import ZSSGAN...` find the prepared checkout, and answer its clip.load calls with our files.

    clip_files: CLIP name as the official code asks for it -> a tiny CLIP file; other names (each CLIPLoss also
    loads RN50, used only by the texture loss) get the first file. The models are the instances load_clip
    gives our own code, so both sides read the same weights.
    """
    import clip
    import clip.clip

    from nada_sweep.models.clip_models import load_clip

    if not (_zssgan(root) / "model" / "ZSSGAN.py").read_text().count(_W_PLUS_START + ".clone()"):
        raise SystemExit(f"{root}: not prepared; run python benchmarks/prepare_official.py {root}")
    for path in (root, root / "ZSSGAN"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    # StyleGAN3/XL loading (unused here) imports click and dnnlib; a stub keeps those out.
    sys.modules.setdefault("ZSSGAN.legacy", types.ModuleType("ZSSGAN.legacy"))
    fallback = next(iter(clip_files.values()))

    def fake_load(name, device="cpu", jit=False, download_root=None):
        model = load_clip(str(clip_files.get(name, fallback)), "cpu").model
        return model, clip.clip._transform(model.visual.input_resolution)

    clip.load = fake_load


def _zssgan(root: Path) -> Path:
    zssgan = root / "ZSSGAN"
    if not (zssgan / "model" / "ZSSGAN.py").is_file():
        raise SystemExit(f"{root}: not a StyleGAN-nada checkout (no ZSSGAN/model/ZSSGAN.py)")
    return zssgan


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for line in prepare(Path(sys.argv[1])) or ["already prepared"]:
        print(line)
