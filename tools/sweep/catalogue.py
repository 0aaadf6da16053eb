"""What the sweep builds: every text decoder family that transformers and onnxruntime-genai's builder both
support, at tiny size, in the precisions and with the extra options a user commonly builds with.

A family is a transformers config (its model type, tiny dimensions, the family's own features switched on:
sliding windows, softcaps, MoE, conv layers, long rope) made into a random-weight model. A build is one
family with one `--precision` and `--extra_options`; its folder name says both, e.g. `qwen2.5-int4-gather`.

Every family shares the committed fixture tokenizer (fixtures/models/llama-fp32: 1024 tokens, BOS 0, EOS 1,
pad 2, a chat template), so the configs' special ids and vocabulary are those.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VOCAB_SIZE, BOS, EOS, PAD = 1024, 0, 1, 2

# Dimensions every family starts from: int4 blocks (32) divide every matrix, 2 layers, GQA 4:2.
TINY = {
    "vocab_size": VOCAB_SIZE, "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD,
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256,
    # Random weights ten times the usual scale: logits with real gaps, so greedy choices are not coin flips.
    "initializer_range": 0.2,
}
WINDOW = 8  # sliding windows shorter than the scenarios' sequences, so the windowed cache evicts


@dataclass(frozen=True)
class Family:
    name: str
    model_type: str                       # transformers' CONFIG_MAPPING key
    config: dict = field(default_factory=dict)  # over TINY
    architecture: str = ""                # the transformers class, where not the config's CausalLM default
    mxfp4_experts: bool = False           # the checkpoint also ships its experts in MXFP4, as gpt-oss's do
    vision: dict | None = None            # a multimodal checkpoint's vision_config, CONFIG its text_config
                                          # ({}: a multimodal architecture without its vision tower)

    def hf_config(self) -> dict:
        text = {**TINY, **self.config}
        if self.vision is None:
            return text
        special = {key: text[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id")}
        return {"text_config": text, "vision_config": self.vision or None, "tie_word_embeddings":
                text.get("tie_word_embeddings", False), **special}


# A vision tower as small as its config allows: the builder exports only the text decoder, but the
# checkpoint's weights and architecture are the multimodal one's.
TINY_VISION = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64}
TINY_VIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "head_dim": 16}


def _longrope(head_dim: int = 16) -> dict:
    """Phi-3.5's rope_scaling as its config.json writes it ("type", which the builder reads)."""
    half = head_dim // 2
    return {"type": "longrope", "short_factor": [1.0 + i / half for i in range(half)],
            "long_factor": [2.0 + i / half for i in range(half)]}


FAMILIES = [
    Family("llama", "llama", {"tie_word_embeddings": False}),
    Family("llama-tied", "llama", {"tie_word_embeddings": True}),
    Family("llama-0layers", "llama", {"num_hidden_layers": 0}),
    Family("mistral", "mistral", {"sliding_window": None}),
    Family("qwen2", "qwen2", {"tie_word_embeddings": False}),
    Family("qwen2.5", "qwen2", {"tie_word_embeddings": True}),
    Family("qwen3", "qwen3", {"tie_word_embeddings": True}),
    Family("gemma", "gemma", {"tie_word_embeddings": True, "hidden_activation": "gelu_pytorch_tanh"}),
    Family("gemma2", "gemma2", {"tie_word_embeddings": True, "sliding_window": WINDOW,
                                "query_pre_attn_scalar": 16, "attn_logit_softcapping": 50.0,
                                "final_logit_softcapping": 30.0}),
    Family("gemma3", "gemma3_text", {"tie_word_embeddings": True, "sliding_window": WINDOW,
                                     "query_pre_attn_scalar": 16, "sliding_window_pattern": 2,
                                     "layer_types": ["sliding_attention", "full_attention"]}),
    # Partial rotary: GQA's rotary needs half the rotary dimension a multiple of 8, so heads of 32.
    Family("phi", "phi", {"hidden_size": 128, "num_key_value_heads": 4, "head_dim": 32, "partial_rotary_factor": 0.5,
                          "tie_word_embeddings": False}),
    Family("phi3", "phi3", {"original_max_position_embeddings": 256, "tie_word_embeddings": False}),
    Family("phi3.5-longrope", "phi3", {"original_max_position_embeddings": 64, "rope_scaling": _longrope(),
                                       "tie_word_embeddings": False}),
    Family("granite", "granite", {"tie_word_embeddings": True, "embedding_multiplier": 12.0,
                                  "attention_multiplier": 0.25, "residual_multiplier": 0.22,
                                  "logits_scaling": 8.0}),
    Family("ernie4_5", "ernie4_5", {"tie_word_embeddings": True}),
    Family("smollm3", "smollm3", {"tie_word_embeddings": True}),  # 2 layers: both use rope
    Family("smollm3-nope", "smollm3", {"tie_word_embeddings": True, "num_hidden_layers": 4}),  # layer 3 has none
    Family("olmo", "olmo", {"tie_word_embeddings": False}),
    Family("nemotron", "nemotron", {"hidden_size": 128, "head_dim": 32, "partial_rotary_factor": 0.5,
                                    "tie_word_embeddings": False}),
    Family("hunyuan", "hunyuan_v1_dense", {"tie_word_embeddings": True}),
    Family("gpt-oss", "gpt_oss", {"num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 64,
                                  "sliding_window": WINDOW, "layer_types": ["sliding_attention", "full_attention"],
                                  "tie_word_embeddings": False}, mxfp4_experts=True),
    Family("lfm2", "lfm2", {"layer_types": ["conv", "full_attention"], "conv_L_cache": 3,
                            "block_ff_dim": 128, "tie_word_embeddings": True}),
    Family("lfm2-moe", "lfm2_moe", {"layer_types": ["conv", "full_attention"], "conv_L_cache": 3,
                                    "num_dense_layers": 1, "num_experts": 4, "num_experts_per_tok": 2,
                                    "moe_intermediate_size": 64, "tie_word_embeddings": True}),
    # Qwen3.5's interleaved multimodal rotary as its checkpoints configure it (there [11, 11, 10] of 32 rotary
    # frequencies, a quarter of heads of 256): without mrope_section the builder hands RotaryEmbedding [3, B, S]
    # position_ids, which onnxruntime refuses
    Family("qwen3.5", "qwen3_5", {"layer_types": ["linear_attention", "full_attention"],
                                  "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_num_key_heads": 2,
                                  "linear_num_value_heads": 4, "tie_word_embeddings": True,
                                  "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                      "partial_rotary_factor": 0.5, "mrope_section": [2, 1, 1],
                                                      "mrope_interleaved": True}},
           "Qwen3_5ForConditionalGeneration", vision=TINY_VISION),
    Family("qwen2.5-vl", "qwen2_5_vl", {"rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
                                        "tie_word_embeddings": True},
           "Qwen2_5_VLForConditionalGeneration", vision={**TINY_VISION, "fullatt_block_indexes": [0]}),
    Family("qwen3-vl", "qwen3_vl", {"rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2],
                                                     "mrope_interleaved": True}, "tie_word_embeddings": True},
           "Qwen3VLForConditionalGeneration", vision={**TINY_VISION, "deepstack_visual_indexes": [0]}),
    Family("mistral3", "mistral3", {"tie_word_embeddings": False}, "Mistral3ForConditionalGeneration",
           vision=TINY_VIT),
    Family("lfm2-vl", "lfm2_vl", {"layer_types": ["conv", "full_attention"], "conv_L_cache": 3,
                                  "block_ff_dim": 128, "tie_word_embeddings": True},
           "Lfm2VlForConditionalGeneration", vision=TINY_VIT),
    Family("gemma4", "gemma4", {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": WINDOW,
                                "global_head_dim": 32, "hidden_size_per_layer_input": 16,
                                "vocab_size_per_layer_input": VOCAB_SIZE, "tie_word_embeddings": True},
           "Gemma4ForConditionalGeneration", vision={}),
    Family("granite-hybrid", "granitemoehybrid", {"layer_types": ["attention", "attention"],
                                                  "num_local_experts": 0, "shared_intermediate_size": 128,
                                                  "tie_word_embeddings": True}),
]


@dataclass(frozen=True)
class Build:
    family: Family
    precision: str                  # the builder's --precision
    options: tuple = ()             # the builder's --extra_options, key=value
    label: str = ""                 # names the options in the folder name

    @property
    def name(self) -> str:
        return "-".join(part for part in (self.family.name, self.precision, self.label) if part)


def builds() -> list[Build]:
    """Every family in fp32 and int4 (the builder's defaults: accuracy_level 4, block 32, tied embeddings
    as GatherBlockQuantized), then the other precisions and common extra options on the families users
    pick them for. fp32 and int4 come first: the other engineers want those folders soonest."""
    by_name = {family.name: family for family in FAMILIES}
    first = [Build(family, precision) for precision in ("fp32", "int4") for family in FAMILIES]
    extra = [
        Build(by_name["llama"], "int8"),
        Build(by_name["llama"], "fp16"),
        Build(by_name["llama"], "bf16"),
        Build(by_name["qwen2.5"], "int8"),
        Build(by_name["qwen2.5"], "fp16"),
        Build(by_name["gemma2"], "fp16"),
        Build(by_name["qwen3"], "bf16"),
        Build(by_name["phi3.5-longrope"], "fp16"),
        Build(by_name["lfm2"], "fp16"),
        Build(by_name["gpt-oss"], "fp16"),
        Build(by_name["llama"], "int4", ("op_types_to_quantize=MatMul/Gather",), "gather"),
        Build(by_name["llama"], "int4", ("accuracy_level=1",), "acc1"),
        Build(by_name["llama"], "int4", ("is_symmetric=false", "block_size=16"), "asym-b16"),
        Build(by_name["llama"], "fp32", ("include_hidden_states=1",), "hidden"),
        Build(by_name["qwen2.5"], "int4", ("include_hidden_states=1",), "hidden"),
        Build(by_name["qwen2.5"], "int4", ("shared_embeddings=false",), "unshared"),
        Build(by_name["llama"], "int4", ("use_qdq=1",), "qdq"),
        Build(by_name["llama"], "fp32", ("prune_lm_head=1",), "pruned"),
    ]
    return first + extra
