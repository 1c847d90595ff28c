"""nada-sweep: StyleGAN-NADA domain adaptation swept over many text-described domains."""

import warnings

__version__ = "0.1.0"

# OpenAI's `clip` package imports pkg_resources, which warns on import: the first thing every command would print,
# and nothing a user can act on. Set here, where every process (the CLI, each Ray worker) starts, so that it holds
# wherever clip is imported; no other warning is hidden.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning, module=r"clip(\.|$)")
