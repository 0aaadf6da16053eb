"""com.microsoft GroupQueryAttention: causal self-attention with fewer key/value heads than query heads,
rotary embedding and a key/value cache, as onnxruntime's CPU kernel computes it.

Cache semantics (they are the contract with the decode loop):
  * seqlens_k[b] + 1 is the number of valid tokens of row b once this step's tokens are added
    (past + new); total_sequence_length is the largest of those (the attention mask's width).
  * First prompt (sequence_length == total_sequence_length): every row starts at cache slot 0, its
    valid tokens first (right padding). Query i attends to keys 0..i but never to a key at or past
    its row's valid length, so padding queries still get (meaningless) outputs.
  * Later steps (token generation, or a "subsequent prompt" of several tokens, batch 1 only): row
    b's new tokens go to slots past_b.. with past_b = seqlens_k[b] + 1 - sequence_length, whatever
    the past holds beyond that.
  * The rotary position of a token is its cache slot (with a windowed cache, its absolute position).
  * present_key/value have max(total_sequence_length, past cache length) slots: [0, past_b) copied
    from the past, the new tokens at [past_b, past_b + S), zeros after. Feeding a max-length past
    (onnxruntime-genai's shared buffer) therefore keeps the shape; an exactly-sized past grows by S.

Windowed cache (sliding_window_cache=1; gemma2, gemma3 and gpt-oss get it on their local layers):
  The past/present buffers hold C slots (C = past_key.shape[2], the capacity, C >= W where
  W = local_window_size > 0) whatever the sequence length; present has the past's shape. Let
  T = seqlens_k[b] + 1, the row's absolute token count after this step, and G = C - W + 1.
  * Layout. After a step, slots [0, L(T)) hold absolute positions T - L(T) .. T - 1 in order (slot i
    holds position T - L(T) + i); the layout starts at slot 0 and never wraps. Slots [L(T), C) are
    unspecified: onnxruntime leaves old keys there, this kernel zeros. The resident count is
        L(T) = T                            if T <= C
        L(T) = T - G * ceil((T - C) / G)    otherwise,
    so min(T, W) <= L(T) <= min(T, C): the cache fills to C, then evicts its G oldest positions at
    once (shifting the W - 1 newest to the front) and refills, one compaction every G tokens.
  * Reading. A step of S new tokens reads the past as if T_past = T - S tokens had been processed,
    in every row: there is no right-padded first prompt (onnxruntime refuses a row with T < S), and
    a first prompt is T_past = 0. Slots [0, L(T_past)) hold positions T_past - L(T_past) ..
    T_past - 1, whatever the slots after them hold. Keys are those resident positions followed by
    the S new ones; query p attends key j for p - W < j <= p (and j < T), exactly as with a full
    cache, since L(T_past) >= min(T_past, W) keeps every key a window needs. Rotary positions and
    the columns of attention_bias ([.., S, total_sequence_length]) are absolute positions.
  * Filling. present is the last L(T) of those keys, at slots [0, L(T)). It depends on T alone, so
    any split of the same tokens into steps, S > C included, leaves the same buffer.
  * Rewinding by k tokens is a smaller seqlens_k over the same buffer; it reads what it should only
    while L(T - k) = L(T) - k, i.e. while nothing has been evicted since T - k.
  * onnxruntime-genai (genai_config.json's decoder.sliding_window: window_size W, layers, cache_slack)
    gives the listed layers a buffer of C = min(max_length, W + max(slack, chunk_size - 1)) slots, slack
    being cache_slack or, when that is 0, 16 on the CPU (0 under CUDA, which also needs C = W). The
    first prompt's past must already have the C slots (onnxruntime refuses an empty past, "capacity
    0"). The peer refuses rewinds once T > C.

Not mirrored: with local_window_size, softcap or head_sink, and a right-padded first prompt over a full
cache, onnxruntime 1.31 attends a padding query (position >= its row's length T) as if it were the
row's last token (keys T - W .. T - 1); without softcap and head_sink it uses the query's own window,
as this kernel always does. Only those padding rows' (meaningless) outputs differ.
"""

import numpy as np

from .attention_common import (
    additive_mask,
    apply_rotary,
    attend,
    causal_mask,
    merge_heads,
    repeat_kv_heads,
    split_heads,
)
from .contrib_op import ContribOp, unsupported


class GroupQueryAttention(ContribOp):
    """output = softmax(softcap(scale * Q K^T) + mask + attention_bias) V per query head, K and V being
    the cached keys and values of its group; local_window_size >= 0 keeps only the last that many keys
    (the query's own included), and head_sink / smooth_softmax add an extra logit to the denominator.
    A query with no key left to attend outputs zeros."""

    implemented_values = {
        "qk_output": (0,),
        "causal": (1,),
        "sliding_window_cache": (0, 1),
        "k_quant_type": ("NONE",),
        "v_quant_type": ("NONE",),
        "kv_cache_bit_width": (0,),
    }
    unimplemented_inputs = {9: "position_ids", 12: "k_scale", 13: "v_scale", 14: "q_norm_weight", 15: "k_norm_weight"}

    def _run(
        self,
        query,
        key=None,
        value=None,
        past_key=None,
        past_value=None,
        seqlens_k=None,
        total_sequence_length=None,
        cos_cache=None,
        sin_cache=None,
        position_ids=None,
        attention_bias=None,
        head_sink=None,
        k_scale=None,
        v_scale=None,
        q_norm_weight=None,
        k_norm_weight=None,
        num_heads=None,
        kv_num_heads=None,
        scale=0.0,
        softcap=0.0,
        local_window_size=-1,
        do_rotary=0,
        rotary_interleaved=0,
        smooth_softmax=0,
        qk_output=0,
        causal=1,
        sliding_window_cache=0,
        k_quant_type="NONE",
        v_quant_type="NONE",
        kv_cache_bit_width=0,
        qk_norm_epsilon=1e-6,
    ):
        if past_key is not None and past_key.dtype.kind != "f":
            raise unsupported("GroupQueryAttention", "quantized past_key dtype", str(past_key.dtype))
        batch, new_length, _ = query.shape
        if key is None:  # packed QKV: [B, S, (N + 2 Nkv) * D]
            head_size = query.shape[2] // (num_heads + 2 * kv_num_heads)
            query, key, value = np.split(
                query, [num_heads * head_size, (num_heads + kv_num_heads) * head_size], axis=-1
            )
        q = split_heads(query, num_heads)  # [B, N, S, D]
        k = split_heads(key, kv_num_heads)  # [B, Nkv, S, D]
        v = split_heads(value, kv_num_heads)  # [B, Nkv, S, D]

        valid_lengths = seqlens_k.astype(np.int64) + 1  # [B], past + new valid tokens per row
        total_length = int(np.asarray(total_sequence_length).reshape(-1)[0])
        first_prompt = self._is_first_prompt(batch, new_length, total_length)
        if sliding_window_cache:  # no padded first prompt: every row's new tokens end its sequence
            past_lengths = windowed_past_lengths(valid_lengths, new_length)  # [B]
        elif first_prompt:
            past_lengths = np.zeros_like(valid_lengths)  # [B]
        else:
            past_lengths = valid_lengths - new_length  # [B]
        positions = past_lengths[:, None] + np.arange(new_length)  # [B, S], absolute position of each new token

        if do_rotary:
            q, k = self._rotate(q, k, positions, cos_cache, sin_cache, rotary_interleaved)
        if sliding_window_cache:
            cache = windowed_cache(past_key, past_value, k, v, past_lengths, valid_lengths, local_window_size)
        else:
            cache = full_cache(past_key, past_value, k, v, past_lengths, positions, total_length)
        keys, values, first_key_positions, present_key, present_value = cache

        bias = attention_bias_at(attention_bias, first_key_positions, keys.shape[2])  # [B, N or 1, S, K]
        bias = bias + additive_mask(
            allowed_keys(positions, valid_lengths, first_key_positions, keys.shape[2], local_window_size)
        )  # [B, N or 1, S, K]
        sink = None
        if head_sink is not None:
            sink = head_sink.reshape(1, num_heads, 1, 1)
        elif smooth_softmax == 1:
            sink = np.zeros((1, 1, 1, 1), np.float32)

        output = attend(
            q,
            repeat_kv_heads(keys, num_heads),  # [B, N, K, D]
            repeat_kv_heads(values, num_heads),  # [B, N, K, D]
            scale,
            bias,
            softcap,
            sink,
        )  # [B, N, S, D]
        return merge_heads(output), present_key, present_value  # [B, S, N*D], [B, Nkv, P or C, D] x2

    @staticmethod
    def _rotate(q, k, positions, cos_cache, sin_cache, interleaved):
        """Rotary embedding of the queries and new keys at their absolute positions."""
        if cos_cache is None or sin_cache is None:
            raise ValueError("GroupQueryAttention: do_rotary=1 needs cos_cache and sin_cache.")
        if positions.max() >= min(cos_cache.shape[0], sin_cache.shape[0]):
            raise ValueError(
                f"GroupQueryAttention: a token at position {positions.max()} needs cos_cache and sin_cache rows "
                f"up to it, but they have {cos_cache.shape[0]} and {sin_cache.shape[0]}."
            )
        cos = cos_cache[positions][:, None]  # [B, 1, S, R/2]
        sin = sin_cache[positions][:, None]  # [B, 1, S, R/2]
        return apply_rotary(q, cos, sin, interleaved), apply_rotary(k, cos, sin, interleaved)

    @staticmethod
    def _is_first_prompt(batch, new_length, total_length):
        """The prompt of an empty cache, as opposed to token generation or a 'subsequent prompt'."""
        if new_length > 1 and new_length != total_length:  # appending several tokens to a cache
            if batch != 1:
                raise ValueError("GroupQueryAttention: sequence_length > 1 with a past needs batch_size 1.")
            return False
        return new_length == total_length


def full_cache(past_key, past_value, k, v, past_lengths, positions, total_length):
    """The keys and values to attend, each slot's absolute position being its index, and the presents:
    both are the past's valid slots with the new tokens after them -> (keys, values [B, Nkv, K, D], first
    key positions [B] (zeros), present_key, present_value [B, Nkv, P, D]). The keys stop after the last new
    token's slot (K = its position + 1): no query attends a later one, however many slots a shared
    max_length buffer holds."""
    cache_length = 0 if past_key is None else past_key.shape[2]
    present_length = max(total_length, cache_length)
    if positions.max() >= present_length:
        raise ValueError(
            f"GroupQueryAttention: new tokens reach cache position {positions.max()} but present holds "
            f"{present_length} slots (total_sequence_length={total_length}, past_key has {cache_length})."
        )
    present_key = write_cache(past_key, k, past_lengths, present_length)  # [B, Nkv, P, D]
    present_value = write_cache(past_value, v, past_lengths, present_length)  # [B, Nkv, P, D]
    attended = int(positions.max()) + 1  # K
    keys, values = present_key[:, :, :attended], present_value[:, :, :attended]  # [B, Nkv, K, D] x2
    return keys, values, np.zeros_like(past_lengths), present_key, present_value


def windowed_cache(past_key, past_value, k, v, past_lengths, valid_lengths, window):
    """The keys and values to attend: each row's resident past followed by its new tokens, slot j holding
    absolute position first[b] + j; and the presents, their newest L(T) slots moved to the front ->
    (keys, values [B, Nkv, K, D], first [B], present_key, present_value [B, Nkv, C, D])."""
    capacity = check_window_cache(past_key, past_value, window)
    resident_past = resident_lengths(past_lengths, capacity, window)  # [B]
    staged_length = resident_past.max() + k.shape[2]
    keys = write_cache(past_key, k, resident_past, staged_length)  # [B, Nkv, K, D]
    values = write_cache(past_value, v, resident_past, staged_length)  # [B, Nkv, K, D]
    first_key_positions = past_lengths - resident_past  # [B]
    staged = valid_lengths - first_key_positions  # [B], valid key slots per row
    resident = resident_lengths(valid_lengths, capacity, window)  # [B]
    present_key = keep_newest(keys, staged, resident, capacity)  # [B, Nkv, C, D]
    present_value = keep_newest(values, staged, resident, capacity)  # [B, Nkv, C, D]
    return keys, values, first_key_positions, present_key, present_value


def write_cache(past, new, past_lengths, length):
    """`length` cache slots per row: its first past_b slots of `past`, its S new tokens after them, zeros
    after those -> [B, Nkv, length, D]."""
    batch, heads, new_length, head_size = new.shape
    present = np.zeros((batch, heads, length, head_size), new.dtype)  # [B, Nkv, length, D]
    if past is not None:
        for row, kept in enumerate(np.clip(past_lengths, 0, min(past.shape[2], length))):
            present[row, :, :kept] = past[row, :, :kept]  # only the valid slots: a long buffer's others stay zero
    rows = np.arange(batch)[:, None]  # [B, 1]
    slots = past_lengths[:, None] + np.arange(new_length)  # [B, S]
    present[rows, :, slots] = new.transpose(0, 2, 1, 3)  # indexed view is [B, S, Nkv, D]
    return present


def allowed_keys(positions, valid_lengths, first_key_positions, key_length, window):
    """True where query s of row b may attend key slot j -> [B, 1, S, K]. Slot j holds absolute position
    first_key_positions[b] + j: causal, within the local window, and a valid token of the row (which
    only rules out the padding of a batched first prompt)."""
    relative = positions - first_key_positions[:, None]  # [B, S], query positions counted from slot 0
    allowed = causal_mask(relative, key_length, window)  # [B, S, K]
    allowed &= np.arange(key_length) < (valid_lengths - first_key_positions)[:, None, None]
    return allowed[:, None]  # [B, 1, S, K]


def attention_bias_at(attention_bias, first_key_positions, key_length):
    """The columns of attention_bias ([B or 1, N or 1, S, total], indexed by absolute key position) for
    the key slots -> [B, N or 1, S, K]; 0 without one. Slots past `total` read its last column: they
    are masked anyway."""
    if attention_bias is None:
        return np.float32(0)
    batch = len(first_key_positions)
    columns = first_key_positions[:, None] + np.arange(key_length)  # [B, K]
    columns = np.minimum(columns, attention_bias.shape[-1] - 1)[:, None, None, :]  # [B, 1, 1, K]
    full = np.broadcast_to(attention_bias, (batch, *attention_bias.shape[1:]))  # [B, N or 1, S, total]
    return np.take_along_axis(full, columns, axis=-1)  # [B, N or 1, S, K]


def resident_lengths(total_lengths, capacity, window):
    """L(T): how many of a row's T newest positions a windowed cache of `capacity` slots holds ([B]).

    It fills up to its capacity, then evicts G = capacity - window + 1 positions at a time, keeping
    the window's window - 1 newest (the next query's past) at the front.
    """
    evicted_at_once = capacity - window + 1  # G
    compactions = -(-(total_lengths - capacity) // evicted_at_once)  # [B], ceil((T - C) / G)
    return np.where(total_lengths <= capacity, total_lengths, total_lengths - evicted_at_once * compactions)


def keep_newest(keys, staged_lengths, resident, capacity):
    """The windowed present: each row's `resident` newest valid key slots moved to slots [0, resident),
    zeros after them -> [B, Nkv, C, D]. `keys` ([B, Nkv, K, D]) holds staged_lengths[b] valid slots."""
    first = (staged_lengths - resident)[:, None] + np.arange(capacity)  # [B, C], source slot of each slot
    kept = np.arange(capacity) < resident[:, None]  # [B, C]
    source = np.clip(first, 0, keys.shape[2] - 1)[:, None, :, None]  # [B, 1, C, 1]
    newest = np.take_along_axis(keys, source, axis=2)  # [B, Nkv, C, D]
    return np.where(kept[:, None, :, None], newest, 0).astype(keys.dtype, copy=False)


def windowed_past_lengths(valid_lengths, new_length):
    """Each row's tokens before this step, for a windowed cache, where onnxruntime places the new tokens
    at the end of every row: a row with fewer valid tokens than the step has is refused."""
    past_lengths = valid_lengths - new_length  # [B]
    if past_lengths.min() < 0:
        row = int(past_lengths.argmin())
        raise ValueError(
            f"GroupQueryAttention: seqlens_k[{row}] = {valid_lengths[row] - 1} is too small for sequence_length "
            f"{new_length} with sliding_window_cache=1 (a batched prompt cannot be right-padded)."
        )
    return past_lengths


def check_window_cache(past_key, past_value, window):
    """The capacity C of a windowed cache, refusing what onnxruntime refuses."""
    op = "GroupQueryAttention"
    if window <= 0:
        raise ValueError(f"{op}: sliding_window_cache=1 needs local_window_size > 0, not {window}.")
    if past_key is None or past_value is None:
        raise ValueError(f"{op}: sliding_window_cache=1 needs past_key and past_value (the window-sized buffers).")
    if past_value.shape != past_key.shape:
        raise ValueError(f"{op}: past_value {list(past_value.shape)} and past_key {list(past_key.shape)} differ.")
    if past_key.shape[2] < window:
        raise ValueError(
            f"{op}: sliding_window_cache=1 with a cache of {past_key.shape[2]} slots, fewer than "
            f"local_window_size={window}."
        )
    return past_key.shape[2]
