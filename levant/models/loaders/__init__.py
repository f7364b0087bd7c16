"""Checkpoint loaders: a file format in, ``(ModelConfig, state_dict in our names)`` out.

Formats: a llama GGUF file, an HF Llama/Mistral directory, or Mistral's consolidated
directory. ``load_checkpoint`` picks one by looking at the path; the model never knows.
"""

from __future__ import annotations

from pathlib import Path

import torch

from levant.models.config import ModelConfig
from levant.models.loaders.consolidated import load_consolidated
from levant.models.loaders.gguf import load_gguf
from levant.models.loaders.hf import load_hf

__all__ = ["load_checkpoint", "load_consolidated", "load_gguf", "load_hf"]


def load_checkpoint(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Detect the checkpoint format at ``path`` and load it."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return load_gguf(path)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return load_gguf(ggufs[0])
        if len(ggufs) > 1:
            raise ValueError(f"{path} holds {len(ggufs)} .gguf files; name one")
        if (path / "params.json").is_file() and (path / "consolidated.safetensors").is_file():
            return load_consolidated(path)
        if (path / "config.json").is_file():
            return load_hf(path)
    raise ValueError(
        f"{path} is not a checkpoint: expected a .gguf file, a directory with params.json + "
        "consolidated.safetensors, or a directory with config.json"
    )
