"""com.microsoft MoE and QMoE: a mixture of experts, each token sent through the k experts its router ranks
highest, their outputs mixed by the router's weights. The official builder writes MoE for gpt-oss's float
builds and QMoE, the same with block-quantized experts, for its int4 and int8 builds.

Each expert is a two-layer feed-forward network, y = fc2(activation(fc1(x))): fc1 [2 * inter, hidden] for
SwiGLU (gate and linear rows interleaved), [inter, hidden] otherwise, fc2 [hidden, inter]; the weights are
output-major, the contraction axis last, each layer with an optional bias.
"""

import numpy as np

from ..cpp_arithmetic import expf
from .contrib_op import ContribOp, unsupported
from .matmul_nbits import int8_rounded, unpack_weights

F32 = np.float32


class Mixture(ContribOp):
    """What MoE and QMoE implement, as onnxruntime's CPU kernel: no sparse mixer, the activations of
    ACTIVATIONS, and SwiGLU only with its gate and linear rows interleaved (swiglu_fusion 1)."""

    implemented_values = {"use_sparse_mixer": (0,)}
    widens_half_inputs = False  # QMoE: float32 only here

    @classmethod
    def check_attributes(cls, op_type, attributes):
        activation = attributes.get("activation_type")
        if activation not in (*ACTIVATIONS, "swiglu"):
            raise unsupported(op_type, "activation_type", activation)
        if activation == "swiglu" and attributes.get("swiglu_fusion", 0) != 1:
            raise unsupported(op_type, "swiglu_fusion", attributes.get("swiglu_fusion", 0))


class MoE(Mixture):
    """fc1_experts_weights [experts, fc1 rows, hidden], fc2_experts_weights [experts, hidden, inter], biases
    [experts, rows]. Like onnxruntime's CPU kernel: no fc3 (a separate gate), no sparse mixer, SwiGLU only
    interleaved (swiglu_fusion 1); float32, or float16 computed in float32 (see ContribOp)."""

    unimplemented_inputs = {6: "fc3_experts_weights", 7: "fc3_experts_bias"}  # a separate gate projection
    widens_half_inputs = True  # the builder's fp16 gpt-oss: onnxruntime's CPU MoE takes float16 too

    def _run(
        self, input, router_probs, fc1_experts_weights, fc1_experts_bias=None, fc2_experts_weights=None,
        fc2_experts_bias=None, fc3_experts_weights=None, fc3_experts_bias=None, **attributes,
    ):  # fmt: skip
        settings = MixtureSettings("MoE", input, **attributes)
        inter = fc2_experts_weights.shape[-1]
        fc1_rows, hidden = settings.fc1_rows(inter), settings.hidden
        check_shapes("MoE", settings, router_probs, {
            "fc1_experts_weights": (fc1_experts_weights, fc1_rows, hidden),
            "fc1_experts_bias": (fc1_experts_bias, fc1_rows),
            "fc2_experts_weights": (fc2_experts_weights, hidden, inter),
            "fc2_experts_bias": (fc2_experts_bias, hidden),
        })  # fmt: skip

        def expert_network(expert, tokens):
            fc1 = fc1_experts_weights[expert], expert_bias(fc1_experts_bias, expert)
            fc2 = fc2_experts_weights[expert], expert_bias(fc2_experts_bias, expert)
            return feed_forward(tokens, fc1, fc2, settings)

        chosen, weights = route(router_probs.astype(F32), settings.k, settings.normalize)  # [tokens, k] each
        return (mixture(input, chosen, weights, expert_network),)


class QMoE(Mixture):
    """MoE with experts quantized as MatMulNBits weights (no g_idx): fc1_experts_weights [experts, fc1 rows,
    hidden * bits / 8] uint8, each row in blocks of block_size values; scales [experts, rows, blocks], or
    [experts, rows] (one block a row) without block_size; zero points packed like the weights, 2^(bits - 1)
    by default. An expert's weights are dequantized only when a token picks it.

    onnxruntime's CPU kernel routes differently from its MoE: by the k largest logits, weighted by their
    softmax, whatever normalize_routing_weights says (route_by_top_logits). As there, block-wise 8-bit
    experts (and 4-bit ones at accuracy_level 4) take their inputs rounded to int8 per block, as MatMulNBits
    at accuracy_level 4 does (MLAS has no float32 kernel for 8 bits); other experts multiply the dequantized
    weights in float32. Blocks must divide the rows: onnxruntime computes ragged ones another way."""

    unimplemented_inputs = {
        8: "fc3_experts_weights", 9: "fc3_scales", 10: "fc3_experts_bias", 13: "fc3_zero_points", 14: "router_weights",
    }  # fmt: skip

    @classmethod
    def check_attributes(cls, op_type, attributes):
        super().check_attributes(op_type, attributes)
        if attributes.get("expert_weight_bits") not in (4, 8):
            raise unsupported(op_type, "expert_weight_bits", attributes.get("expert_weight_bits"))

    def _run(
        self, input, router_probs, fc1_experts_weights, fc1_scales, fc1_experts_bias=None,
        fc2_experts_weights=None, fc2_scales=None, fc2_experts_bias=None, fc3_experts_weights=None,
        fc3_scales=None, fc3_experts_bias=None, fc1_zero_points=None, fc2_zero_points=None, fc3_zero_points=None,
        router_weights=None, expert_weight_bits=None, block_size=None, accuracy_level=0, **attributes,
    ):  # fmt: skip
        settings = MixtureSettings("QMoE", input, **attributes)
        bits = expert_weight_bits
        hidden, inter = settings.hidden, fc2_experts_weights.shape[-1] * 8 // bits
        fc1_rows = settings.fc1_rows(inter)
        check_quantization(block_size, hidden, inter, {
            "fc1_experts_weights": fc1_experts_weights, "fc2_experts_weights": fc2_experts_weights,
            "fc1_zero_points": fc1_zero_points, "fc2_zero_points": fc2_zero_points,
        })  # fmt: skip
        check_shapes("QMoE", settings, router_probs, {
            "fc1_experts_bias": (fc1_experts_bias, fc1_rows), "fc2_experts_bias": (fc2_experts_bias, hidden),
            **quantized_shapes(
                "fc1", fc1_experts_weights, fc1_scales, fc1_zero_points, (fc1_rows, hidden), bits, block_size
            ),
            **quantized_shapes(
                "fc2", fc2_experts_weights, fc2_scales, fc2_zero_points, (hidden, inter), bits, block_size
            ),
        })  # fmt: skip
        int8_inputs = block_size is not None and (bits == 8 or accuracy_level == 4)

        def expert_network(expert, tokens):
            fc1 = dequantized(fc1_experts_weights, fc1_scales, fc1_zero_points, expert, bits, block_size)
            fc2 = dequantized(fc2_experts_weights, fc2_scales, fc2_zero_points, expert, bits, block_size)
            rounded = (lambda x: int8_rounded(x, block_size)) if int8_inputs else None
            fc1, fc2 = (fc1, expert_bias(fc1_experts_bias, expert)), (fc2, expert_bias(fc2_experts_bias, expert))
            return feed_forward(tokens, fc1, fc2, settings, rounded)

        chosen, weights = route_by_top_logits(router_probs.astype(F32), settings.k)  # [tokens, k] each
        return (mixture(input, chosen, weights, expert_network),)


def check_quantization(block_size, hidden, inter, packed):
    """Raise unless the arrays in `packed` (name -> array or None) are uint8 and block_size, if set, is a
    power of 2 from 16 up that divides both layers' inputs."""
    for name, array in packed.items():
        if array is not None and array.dtype != np.uint8:
            raise unsupported("QMoE", f"{name} dtype", str(array.dtype))
    if block_size is None:
        return
    if block_size < 16 or block_size & (block_size - 1) or hidden % block_size or inter % block_size:
        raise ValueError(
            f"QMoE: block_size={block_size} must be a power of 2, at least 16, dividing hidden ({hidden}) and "
            f"inter ({inter})."
        )


def quantized_shapes(layer, weights, scales, zero_points, rows_and_inputs, bits, block_size):
    """check_shapes's entries for one quantized layer of `rows` outputs over `inputs` values."""
    rows, inputs = rows_and_inputs
    blocks = 1 if block_size is None else inputs // block_size
    return {
        f"{layer}_experts_weights": (weights, rows, inputs * bits // 8),
        f"{layer}_scales": (scales, rows, blocks) if block_size else (scales, rows),
        f"{layer}_zero_points": (zero_points, rows, -(-blocks * bits // 8)),
    }


def dequantized(weights, scales, zero_points, expert, bits, block_size):
    """One expert's weights [rows, inputs] in float32, from its packed [rows, inputs * bits / 8] bytes."""
    rows, packed_inputs = weights.shape[1:]
    block_size = block_size or packed_inputs * 8 // bits  # no block_size: one block a row
    blocks = weights[expert].reshape(rows, -1, block_size * bits // 8)  # [rows, blocks, block bytes]
    expert_zero_points = None if zero_points is None else zero_points[expert]
    centred, block_scales = unpack_weights(blocks, scales[expert], expert_zero_points, rows, bits, block_size)
    return (centred * block_scales[..., None]).reshape(rows, -1)  # [rows, inputs]


def expert_bias(biases, expert):
    return None if biases is None else biases[expert]


class MixtureSettings:
    """The attributes MoE and QMoE share (those Mixture does not refuse), with onnxruntime's CPU defaults;
    the input's token count and hidden size."""

    def __init__(
        self, op_type, input, k=None, activation_type=None, normalize_routing_weights=0,
        use_sparse_mixer=0, swiglu_fusion=0, swiglu_limit=np.inf, activation_alpha=1.0, activation_beta=0.0,
    ):  # fmt: skip
        if input.dtype != F32:
            raise unsupported(op_type, "input dtype", str(input.dtype))
        if k is None or k < 1:
            raise ValueError(f"{op_type}: k={k} must be at least 1.")
        activation = activation_type.decode() if isinstance(activation_type, bytes) else activation_type
        self.hidden, self.tokens = input.shape[-1], input.size // max(input.shape[-1], 1)
        self.k, self.activation, self.normalize = k, activation, bool(normalize_routing_weights)
        self.alpha, self.beta, self.limit = F32(activation_alpha), F32(activation_beta), F32(swiglu_limit)

    def fc1_rows(self, inter):
        """fc1's output width: SwiGLU's gate and linear halves, or the activation's input."""
        return 2 * inter if self.activation == "swiglu" else inter


def check_shapes(op_type, settings, router_probs, shapes):
    """Raise unless router_probs is [tokens, experts] with experts >= k and each array in `shapes`
    (name -> (array or None, its shape after the experts axis)) has its shape."""
    experts = router_probs.shape[-1]
    if router_probs.ndim != 2 or settings.k > experts:
        raise ValueError(
            f"{op_type}: router_probs of shape {router_probs.shape} must be [tokens, experts >= k={settings.k}]."
        )
    if settings.tokens != len(router_probs):
        raise ValueError(f"{op_type}: {settings.tokens} tokens but router_probs has {len(router_probs)} rows.")
    for name, (array, *shape) in shapes.items():
        if array is not None and array.shape != (experts, *shape):
            raise ValueError(f"{op_type}: {name} has shape {array.shape}, expected {(experts, *shape)}.")


def mixture(input, chosen, weights, expert_network):
    """sum over each token's chosen experts [tokens, k] of weight [tokens, k] * expert_network(expert, token),
    in float32, input's shape; a weight of 0 skips its expert.

    Experts are visited in index order, as onnxruntime's kernel does on one thread (on more threads it adds
    the threads' partial sums in double: a float32 rounding's difference)."""
    tokens = input.reshape(len(chosen), -1)  # [tokens, hidden]
    output = np.zeros(tokens.shape, F32)  # [tokens, hidden]
    for expert in np.unique(chosen[weights > 0]):
        rows, slots = np.nonzero((chosen == expert) & (weights > 0))  # a token picks an expert at most once
        output[rows] += weights[rows, slots][:, None] * expert_network(expert, tokens[rows])  # [rows, hidden]
    return output.reshape(input.shape)


def route(logits, k, normalize):
    """MoE's routing: each token's k most probable experts [tokens, k] and their weights [tokens, k] in
    float32, the softmax over all experts or, when normalizing, those k probabilities over their sum."""
    probabilities = softmax(logits)  # [tokens, experts]
    chosen = top_k(probabilities, k)  # [tokens, k]
    weights = np.take_along_axis(probabilities, chosen, axis=-1)  # [tokens, k]
    if normalize:
        weights = weights / sequential_sum(weights)[:, None]  # [tokens, k]
    return chosen, weights


def route_by_top_logits(logits, k):
    """QMoE's routing: each token's k largest logits [tokens, k], weighted by their softmax, which multiplies by
    the sum's reciprocal; weights up to 1e-8 are dropped."""
    chosen = top_k(logits, k)  # [tokens, k]
    top_logits = np.take_along_axis(logits, chosen, axis=-1)  # [tokens, k], largest first
    exponentials = expf(top_logits - top_logits[:, :1])  # [tokens, k]
    weights = exponentials * (F32(1) / sequential_sum(exponentials))[:, None]  # [tokens, k]
    return chosen, np.where(weights > F32(1e-8), weights, F32(0))


def top_k(scores, k):
    """The indices of each row's k largest scores [rows, k], largest first; of equal scores the higher index
    ranks first, as std::partial_sort with std::greater orders (score, index) pairs."""
    indices = np.broadcast_to(np.arange(scores.shape[-1]), scores.shape)  # [rows, experts]
    return np.lexsort((-indices, -scores), axis=-1)[:, :k]  # [rows, k]


def softmax(logits):
    """Row softmax in float32 as a C++ loop computes it: glibc's expf, sums in index order."""
    exponentials = expf(logits - logits.max(axis=-1, keepdims=True))  # [tokens, experts]
    return exponentials / sequential_sum(exponentials)[:, None]  # [tokens, experts]


def sequential_sum(rows):
    """Each row's float32 sum in index order (np.cumsum accumulates sequentially, np.sum pairwise)."""
    return np.cumsum(rows, axis=-1, dtype=F32)[:, -1]  # [rows]


def feed_forward(tokens, fc1, fc2, settings, rounded=None):
    """One expert on its tokens [n, hidden]: fc2(activation(fc1(tokens))) [n, hidden]; fc1 and fc2 are
    (weights, bias or None) pairs. `rounded`, if given, rounds each layer's input first."""
    rounded = rounded or (lambda x: x)
    hidden = linear(rounded(tokens), *fc1)  # [n, fc1 rows]
    if settings.activation == "swiglu":
        hidden = swiglu(hidden, settings.alpha, settings.beta, settings.limit)  # [n, inter]
    else:
        hidden = ACTIVATIONS[settings.activation](hidden)  # [n, inter]
    return linear(rounded(hidden), *fc2)  # [n, hidden]


def linear(x, weights, bias):
    """x [n, in] @ weights [out, in].T (+ bias [out]) -> [n, out]."""
    y = x @ weights.T  # [n, out]
    return y if bias is None else y + bias


def swiglu(x, alpha, beta, limit):
    """Interleaved SwiGLU [n, 2 * inter] -> [n, inter]: gate * sigmoid(alpha * gate) * (linear + beta), the
    gate capped at `limit` and the linear part clamped to [-limit, limit], as gpt-oss defines it."""
    gate = np.minimum(x[:, 0::2], limit)  # [n, inter]
    linear_part = np.clip(x[:, 1::2], -limit, limit)  # [n, inter]
    sigmoid = F32(1) / (F32(1) + expf(-(alpha * gate)))  # [n, inter]
    return gate * sigmoid * (linear_part + beta)


def gelu_tanh(x):
    """GELU's tanh approximation, its terms grouped as onnxruntime's MoE writes them."""
    return F32(0.5) * x * (F32(1) + np.tanh(F32(0.7978845608) * (x + F32(0.044715) * x * x * x)))


ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, F32(0)),
    "gelu": gelu_tanh,
    "silu": lambda x: x * (F32(1) / (F32(1) + expf(-x))),
    "identity": lambda x: x,
}

