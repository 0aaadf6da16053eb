"""numpy kernels for the onnxruntime contrib operators that onnxruntime-genai models use.

Pass `CONTRIB_OPS` as `new_ops` to `onnx.reference.ReferenceEvaluator`.
"""

from .attention import Attention
from .causal_conv_with_state import CausalConvWithState
from .embed_layer_normalization import EmbedLayerNormalization
from .gather_block_quantized import GatherBlockQuantized
from .gelu import FastGelu, QuickGelu
from .group_query_attention import GroupQueryAttention
from .layer_norms import (
    GatedRMSNorm,
    SimplifiedLayerNormalization,
    SkipLayerNormalization,
    SkipSimplifiedLayerNormalization,
)
from .linear_attention import LinearAttention
from .linear_attention_gate import LinearAttentionGate
from .matmul_nbits import MatMulNBits
from .moe import MoE, QMoE
from .mrotary_embedding import MRotaryEmbedding
from .multi_head_attention import MultiHeadAttention
from .rotary_embedding import RotaryEmbedding

CONTRIB_OPS = [
    Attention,
    CausalConvWithState,
    EmbedLayerNormalization,
    FastGelu,
    GatedRMSNorm,
    GatherBlockQuantized,
    GroupQueryAttention,
    LinearAttention,
    LinearAttentionGate,
    MatMulNBits,
    MoE,
    MRotaryEmbedding,
    MultiHeadAttention,
    QMoE,
    QuickGelu,
    RotaryEmbedding,
    SimplifiedLayerNormalization,
    SkipLayerNormalization,
    SkipSimplifiedLayerNormalization,
]
