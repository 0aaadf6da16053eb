"""gpt-oss's checkpoints ship their experts in MXFP4 (OCP microscaling: blocks of 32 e2m1 values sharing one
power-of-two scale), and the builder's int4 build reads those tensors. A random-weight model has only the
float experts, so they are quantized here into the checkpoint's layout, beside the float weights:

    model.layers.L.mlp.experts.{gate_up,down}_proj_blocks   uint8 [experts, out, in/32, 16]  two codes a byte
    model.layers.L.mlp.experts.{gate_up,down}_proj_scales   uint8 [experts, out, in/32]      exponent + 127
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

E2M1_MAGNITUDES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], np.float32)
BLOCK = 32
MXFP4_FILE = "mxfp4-experts.safetensors"


def quantize(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """weight float [E, N, K] (output-major) -> (blocks uint8 [E, N, K/32, 16], scales uint8 [E, N, K/32])."""
    experts, rows, columns = weight.shape
    blocked = weight.reshape(experts, rows, columns // BLOCK, BLOCK)                  # [E, N, K/32, 32]
    largest = np.abs(blocked).max(axis=-1)                                             # [E, N, K/32]
    # The smallest power of two that brings the block's largest value within e2m1's largest, 6
    exponent = np.ceil(np.log2(np.maximum(largest, 1e-30) / E2M1_MAGNITUDES[-1])).clip(-127, 127)
    scaled = blocked / np.exp2(exponent)[..., None]
    nearest = np.abs(np.abs(scaled)[..., None] - E2M1_MAGNITUDES).argmin(axis=-1)     # [E, N, K/32, 32]
    codes = (nearest | np.where(scaled < 0, 8, 0)).astype(np.uint8)
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)                                # [E, N, K/32, 16]
    return blocks.astype(np.uint8), (exponent + 127).astype(np.uint8)


def write_experts(model, folder: Path) -> None:
    """Add the MXFP4 experts of every layer of MODEL (a transformers GptOss model) to FOLDER, saved by
    save_pretrained in one model.safetensors, and an index naming both files, as a sharded checkpoint has."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    tensors = {}
    for index, layer in enumerate(model.model.layers):
        experts = layer.mlp.experts
        for projection in ("gate_up_proj", "down_proj"):
            weight = getattr(experts, projection).detach().float().numpy()            # [E, in, out]
            blocks, scales = quantize(np.ascontiguousarray(weight.transpose(0, 2, 1)))
            tensors[f"model.layers.{index}.mlp.experts.{projection}_blocks"] = blocks
            tensors[f"model.layers.{index}.mlp.experts.{projection}_scales"] = scales
    save_file(tensors, str(folder / MXFP4_FILE))
    with safe_open(str(folder / "model.safetensors"), "np") as saved:
        weight_map = {name: "model.safetensors" for name in saved.keys()}
    weight_map.update({name: MXFP4_FILE for name in tensors})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
