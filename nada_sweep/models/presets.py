"""Generator presets: short names for the pretrained generators StyleGAN-NADA's users start from.

A preset names a file in the sweep's weights_dir (the file names of the rosinality-format conversions
StyleGAN-NADA links to) and says where to get it; `nada-sweep models` prints this table.
"""

from __future__ import annotations

from dataclasses import dataclass

_NVIDIA_ADA = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained"
_NVIDIA_TF = "https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks"
_NADA_DRIVE = "the rosinality-format file linked from StyleGAN-NADA's README (its Google Drive of models)"


@dataclass(frozen=True)
class Preset:
    file: str  # expected in weights_dir
    what: str
    source: str  # where users get it


PRESETS: dict[str, Preset] = {
    "ffhq": Preset("stylegan2-ffhq-config-f.pt", "FFHQ faces, 1024 px, config-f",
                   f"{_NADA_DRIVE}; or `nada-sweep convert ffhq.pkl stylegan2-ffhq-config-f.pt` on "
                   f"{_NVIDIA_ADA}/ffhq.pkl"),
    "afhq_cat": Preset("afhqcat.pt", "AFHQ cats, 512 px",
                       f"`nada-sweep convert afhqcat.pkl afhqcat.pt` on {_NVIDIA_ADA}/afhqcat.pkl"),
    "afhq_dog": Preset("afhqdog.pt", "AFHQ dogs, 512 px",
                       f"`nada-sweep convert afhqdog.pkl afhqdog.pt` on {_NVIDIA_ADA}/afhqdog.pkl"),
    "church": Preset("stylegan2-church-config-f.pt", "LSUN church, 256 px, config-f",
                     f"{_NADA_DRIVE}; or NVIDIA's TensorFlow {_NVIDIA_TF}/stylegan2-church-config-f.pkl "
                     "through stylegan2-ada-pytorch's legacy.py, then `nada-sweep convert`"),
    "horse": Preset("stylegan2-horse-config-f.pt", "LSUN horse, 256 px, config-f",
                    f"{_NADA_DRIVE}; or NVIDIA's TensorFlow {_NVIDIA_TF}/stylegan2-horse-config-f.pkl "
                    "through stylegan2-ada-pytorch's legacy.py, then `nada-sweep convert`"),
    "cars": Preset("stylegan2-car-config-f.pt", "LSUN car, 512 px (images 512x384 inside)",
                   f"{_NADA_DRIVE}; or NVIDIA's TensorFlow {_NVIDIA_TF}/stylegan2-car-config-f.pkl "
                   "through stylegan2-ada-pytorch's legacy.py, then `nada-sweep convert`"),
}

GENERATOR_PRESETS: dict[str, str] = {name: preset.file for name, preset in PRESETS.items()}
