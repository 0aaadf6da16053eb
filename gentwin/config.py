"""genai_config.json: the description of a model folder, as onnxruntime-genai's builder writes it.

Both engines read a model folder through this module, so a folder that one accepts the other accepts too.
Only the fields a text model uses are parsed (its decoder, and marian-ssru's encoder); unknown fields are kept
in `raw` untouched.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from gentwin.errors import GentwinError

CONFIG_FILENAME = "genai_config.json"

# Name templates onnxruntime-genai uses when genai_config.json leaves a name out.
DEFAULT_INPUT_NAMES = {
    "input_ids": "input_ids",
    "attention_mask": "attention_mask",
    "position_ids": "position_ids",
    "past_key_names": "past_key_values.%d.key",
    "past_value_names": "past_key_values.%d.value",
    "past_names": None,  # gpt2's combined [2, B, H, S, D] past, e.g. "past_%d"
    "past_conv_names": "past_conv.%d",  # lfm2's convolution state [B, C, K - 1] of a "conv" layer
}
DEFAULT_OUTPUT_NAMES = {
    "logits": "logits",
    "present_key_names": "present.%d.key",
    "present_value_names": "present.%d.value",
    "present_names": None,
    "present_conv_names": "present_conv.%d",
}
# Qwen3.5's linear-attention layers: a conv state [B, C, K - 1] and the recurrence's [B, H, Dk, Dv], named by
# these templates where genai_config.json leaves them out (the peer's RecurrentState defaults, not lfm2's)
RECURRENT_STATE_NAMES = {
    "past_conv_names": "past_key_values.%d.conv_state",
    "past_recurrent_names": "past_key_values.%d.recurrent_state",
    "present_conv_names": "present.%d.conv_state",
    "present_recurrent_names": "present.%d.recurrent_state",
}
# Marian's SSRU decoder (model type marian-ssru): what it takes beside input_ids and gives beside the logits, named
# by these where genai_config.json leaves them out (the peer's defaults)
SSRU_INPUT_NAMES = {
    "encoder_hidden_states": "encoder_hidden_states",
    "encoder_attention_mask": "encoder_attention_mask",
    "rnn_states_prev": "rnn_states_prev",
    "past_key_values_length": "past_key_values_length",
}
SSRU_OUTPUT_NAMES = {"rnn_states": "rnn_states"}
ENCODER_INPUT_NAMES = {"input_ids": "input_ids", "attention_mask": "attention_mask"}
ENCODER_OUTPUT_NAMES = {"encoder_outputs": "encoder_outputs"}

# The decoder-only text models onnxruntime-genai runs (its src/models/model_type.h, ModelType::IsLLM); its
# vision, audio and pipeline types need more than one graph, which gentwin does not run.
PEER_TEXT_MODEL_TYPES = (
    "chatglm", "decoder", "ernie4_5", "gemma", "gemma2", "gemma3_text", "gemma4_text", "gpt2", "gptoss", "granite",
    "granitemoehybrid", "hunyuandensev1", "internlm2", "lfm2", "lfm2_moe", "llama", "mistral", "nemotron", "olmo", "phi",
    "phimoe", "phi3", "phi3small", "qwen2", "qwen3", "qwen3_5_moe_text", "qwen3_5_text", "smollm3",
    # the text decoders of its vision-language models, run on text alone
    "lfm2_vl_text", "mistral3_text", "qwen2_5_vl_text", "qwen3_vl_text",
)
# Its encoder-decoder text model: an encoder run once on the prompt, then a decoder with a recurrent state
ENCODER_DECODER_TYPES = ("marian-ssru",)

# The `search` section: every option `set_search_options` accepts, with onnxruntime-genai's defaults.
PEER_SEARCH_DEFAULTS = {
    "do_sample": False,
    "min_length": 0,
    "max_length": 0,  # 0 means "use context_length", resolved at load
    "batch_size": 1,
    "num_beams": 1,
    "num_return_sequences": 1,
    "repetition_penalty": 1.0,
    "top_k": 50,
    "top_p": 0.0,
    "temperature": 1.0,
    "early_stopping": True,
    "no_repeat_ngram_size": 0,
    "diversity_penalty": 0.0,
    "length_penalty": 1.0,
    "past_present_share_buffer": False,
    "random_seed": -1,
}

# Options gentwin adds beyond the peer; all off by default, so peer parity is untouched.
EXTRA_SEARCH_DEFAULTS = {
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "logit_bias": {},
}


class ConfigError(GentwinError):
    """The model folder or its genai_config.json is missing, malformed or unsupported."""


# onnxruntime-genai's refusal, when a Model with a draft loads, of a KV cache that drops positions
SLIDING_CACHE_WITH_DRAFT = ("Speculative decoding does not support physically sliding KV caches in this release; "
                            "WindowedKeyValueCache cannot rewind after discarding KV history.")


def slides_its_cache(decoder) -> bool:
    """A decoder section whose sliding_window leaves slide_key_value_cache true: the peer's WindowedKeyValueCache
    for QNN graphs, which drops positions."""
    window = decoder.get("sliding_window") if isinstance(decoder, dict) else None
    return isinstance(window, dict) and window.get("slide_key_value_cache", True) is not False


KV_LAYER, WINDOWED_KV_LAYER, CONV_LAYER = "KV cache", "windowed KV cache", "convolution state"
RECURRENT_LAYER = "recurrent state"  # Qwen3.5's linear attention: a convolution state and the recurrence's state
LFM2_TYPES = ("lfm2", "lfm2_moe", "lfm2_vl_text")  # whose layer_types make conv layers (the peer's LFM2Cache)
# The Qwen-VL family (the peer's IsQwenVLFamily), whose position_ids are [3, batch, sequence]: multimodal rotary
MROPE_TYPES = ("qwen2_5_vl_text", "qwen3_vl_text", "qwen3_5_text", "qwen3_5_moe_text")


@dataclass(frozen=True)
class SlidingWindow:
    """decoder.sliding_window: the layers whose GroupQueryAttention keeps a window-sized KV cache
    (sliding_window_cache=1), as the builder writes it for gemma2, gemma3 and gpt-oss on the CPU."""

    window_size: int
    layers: tuple[int, ...]  # empty: every layer
    cache_slack: int  # positions kept beyond the window; 0: the execution provider's default

    def covers(self, layer: int) -> bool:
        return not self.layers or layer in self.layers

    def capacity(self, max_length: int, default_slack: int) -> int:
        """Positions of a windowed layer's buffer, as onnxruntime-genai sizes it (ComputeWindowedKvCacheSize):
        the window and the slack, at most max_length."""
        return min(max_length, self.window_size + (self.cache_slack or default_slack))


@dataclass(frozen=True)
class EncoderConfig:
    """model.encoder of an encoder-decoder model: its graph, which runs once on the prompt, and its width."""

    filename: str
    hidden_size: int
    input_names: dict
    output_names: dict
    session_options: dict


@dataclass
class DecoderConfig:
    filename: str
    num_hidden_layers: int
    num_key_value_heads: int
    head_size: int
    input_names: dict = field(default_factory=lambda: dict(DEFAULT_INPUT_NAMES))
    output_names: dict = field(default_factory=lambda: dict(DEFAULT_OUTPUT_NAMES))
    session_options: dict = field(default_factory=dict)
    layer_types: list[str] | None = None  # lfm2: "full_attention" or "conv" per layer
    sliding_window: SlidingWindow | None = None
    model_type: str = ""
    # Qwen3.5's linear-attention layers. genai_config.json names their states but not the layers: the graph says,
    # by the layers it takes a recurrent state of (find_recurrent_layers), as the peer's RecurrentState finds them.
    recurrent_layers: tuple[int, ...] = ()
    recurrent_templates: dict = field(default_factory=lambda: dict(RECURRENT_STATE_NAMES))  # their states' names

    @property
    def attention_layers(self) -> list[int]:
        """The layers with a KV cache: every layer, but lfm2's conv layers (its LFM2Cache's rule) and
        linear-attention layers."""
        return [layer for layer in range(self.num_hidden_layers)
                if self.layer_kind(layer) not in (CONV_LAYER, RECURRENT_LAYER)]

    @property
    def conv_layers(self) -> list[int]:
        return [layer for layer in range(self.num_hidden_layers) if self.layer_kind(layer) == CONV_LAYER]

    def layer_kind(self, layer: int) -> str:
        """KV_LAYER, WINDOWED_KV_LAYER, CONV_LAYER or RECURRENT_LAYER: what LAYER carries from one run to the next."""
        if layer in self.recurrent_layers:
            return RECURRENT_LAYER
        if self.model_type in LFM2_TYPES and self.layer_types[layer] != "full_attention":
            return CONV_LAYER
        if self.sliding_window is not None and self.sliding_window.covers(layer):
            return WINDOWED_KV_LAYER
        return KV_LAYER

    def conv_names(self, layer: int) -> tuple[str, str]:
        """A conv layer's state: its past input and present output names."""
        return self.input_names["past_conv_names"] % layer, self.output_names["present_conv_names"] % layer

    def recurrent_names(self, layer: int) -> tuple[tuple[str, str], tuple[str, str]]:
        """A linear-attention layer's states, its convolution's then its recurrence's: past inputs, present outputs."""
        templates = self.recurrent_templates
        return ((templates["past_conv_names"] % layer, templates["past_recurrent_names"] % layer),
                (templates["present_conv_names"] % layer, templates["present_recurrent_names"] % layer))

    def find_recurrent_layers(self, graph_inputs) -> None:
        """Take as linear-attention layers those whose recurrent state GRAPH_INPUTS (names) hold."""
        self.recurrent_layers = tuple(layer for layer in range(self.num_hidden_layers)
                                      if self.recurrent_templates["past_recurrent_names"] % layer in graph_inputs)

    def state_input_names(self) -> list[str]:
        """Every input the generator feeds from one run to the next: attention layers' pasts, conv states,
        linear-attention layers' states, an SSRU decoder's encoder outputs, mask, state and step."""
        ssru = [self.input_names[key] for key in SSRU_INPUT_NAMES] if self.model_type in ENCODER_DECODER_TYPES else []
        return (self.cache_names()[0] + [self.conv_names(layer)[0] for layer in self.conv_layers]
                + [name for layer in self.recurrent_layers for name in self.recurrent_names(layer)[0]] + ssru)

    @property
    def combined_past(self) -> bool:
        """gpt2 layout: one past tensor per layer holding keys and values, [2, B, H, S, D]."""
        return bool(self.input_names.get("past_names"))

    @property
    def past_fields(self) -> list[str]:
        """The `inputs` fields whose templates name a layer's past: one combined past, or a key and a value."""
        return ["past_names"] if self.combined_past else ["past_key_names", "past_value_names"]

    @property
    def present_fields(self) -> list[str]:
        return ["present_names"] if self.combined_past else ["present_key_names", "present_value_names"]

    def past_names(self, layer: int) -> list[str]:
        return [self.input_names[field] % layer for field in self.past_fields]

    def present_names(self, layer: int) -> list[str]:
        return [self.output_names[field] % layer for field in self.present_fields]

    def cache_names(self) -> tuple[list[str], list[str]]:
        """Every attention layer's past KV input names and present output names, layer by layer."""
        layers = self.attention_layers
        return ([name for layer in layers for name in self.past_names(layer)],
                [name for layer in layers for name in self.present_names(layer)])


@dataclass
class GenaiConfig:
    folder: str
    model_type: str
    vocab_size: int
    context_length: int
    bos_token_id: int
    eos_token_ids: list[int]
    pad_token_id: int
    decoder: DecoderConfig
    search: dict
    raw: dict
    model_bytes: memoryview | None = field(default=None, repr=False)  # the decoder's bytes, from add_model_data
    encoder: EncoderConfig | None = None  # an encoder-decoder model's encoder (ENCODER_DECODER_TYPES)

    @property
    def model_path(self) -> str:
        return os.path.join(self.folder, self.decoder.filename)

    @property
    def encoder_path(self) -> str:
        return os.path.join(self.folder, self.encoder.filename)


def _require(section: dict, key: str, where: str):
    if key not in section:
        raise ConfigError(f"genai_config.json: missing required field '{where}.{key}'")
    return section[key]


def _as_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"genai_config.json: '{where}' must be an integer, got {value!r}")
    return value


def _at_least(minimum: int, value, where: str) -> int:
    if _as_int(value, where) < minimum:
        raise ConfigError(f"genai_config.json: '{where}' must be at least {minimum}, got {value}")
    return value


def _token_id(value, where: str, vocab_size: int) -> int:
    """VALUE as a token id of a vocabulary of VOCAB_SIZE: the peer's sampler and embedding take no other."""
    if not 0 <= _as_int(value, where) < vocab_size:
        raise ConfigError(f"genai_config.json: '{where}' {value} is not a token id: "
                          f"'model.vocab_size' is {vocab_size}, so ids are in [0, {vocab_size})")
    return value


def _eos_ids(value, vocab_size: int) -> list[int]:
    ids = value if isinstance(value, list) else [value]
    if not ids:
        raise ConfigError("genai_config.json: 'model.eos_token_id' is an empty list")
    return [_token_id(i, "model.eos_token_id", vocab_size) for i in ids]


def _model_type(value) -> str:
    if value not in PEER_TEXT_MODEL_TYPES + ENCODER_DECODER_TYPES:
        raise ConfigError(f"genai_config.json: 'model.type' {value!r} is not a text model type of onnxruntime-genai; "
                          f"those are {', '.join(PEER_TEXT_MODEL_TYPES + ENCODER_DECODER_TYPES)}")
    return value


def _check_layer_template(template, where: str) -> None:
    """A name template of a per-layer tensor, e.g. "past_key_values.%d.key", formats a layer number."""
    try:
        if isinstance(template, str) and template % 0 != template % 1:
            return
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"genai_config.json: '{where}' must be a name template with one %d for the layer number, "
                      f"got {template!r}")


def _parse_decoder(decoder: dict, model_type: str) -> DecoderConfig:
    where = "model.decoder"
    if model_type in ENCODER_DECODER_TYPES:
        return _parse_ssru_decoder(decoder)
    names_in = dict(DEFAULT_INPUT_NAMES, **decoder.get("inputs", {}))
    names_out = dict(DEFAULT_OUTPUT_NAMES, **decoder.get("outputs", {}))
    if names_in.get("past_names") and not names_out.get("present_names"):
        raise ConfigError("genai_config.json: 'model.decoder.inputs.past_names' needs 'outputs.present_names'")
    for section, names in (("inputs", names_in), ("outputs", names_out)):
        for key, template in names.items():
            if key.endswith("_names") and template is not None:
                _check_layer_template(template, f"model.decoder.{section}.{key}")
    layers = _at_least(0, _require(decoder, "num_hidden_layers", where), where + ".num_hidden_layers")
    return DecoderConfig(
        filename=_require(decoder, "filename", where),
        num_hidden_layers=layers,
        num_key_value_heads=_at_least(1, _require(decoder, "num_key_value_heads", where),
                                      where + ".num_key_value_heads"),
        head_size=_at_least(1, _require(decoder, "head_size", where), where + ".head_size"),
        input_names=names_in,
        output_names=names_out,
        session_options=decoder.get("session_options", {}),
        layer_types=_layer_types(decoder, layers, model_type),
        sliding_window=_sliding_window(decoder.get("sliding_window"), layers),
        model_type=model_type,
        recurrent_templates={key: {**decoder.get("inputs", {}), **decoder.get("outputs", {})}.get(key, default)
                             for key, default in RECURRENT_STATE_NAMES.items()},  # those given, else the defaults
    )


def _parse_ssru_decoder(decoder: dict) -> DecoderConfig:
    """Marian's SSRU decoder: no layer keeps a KV cache (its state is rnn_states, one tensor for the whole
    decoder), so genai_config.json gives it no layer count or heads."""
    where = "model.decoder"
    return DecoderConfig(
        filename=_require(decoder, "filename", where),
        num_hidden_layers=0,
        num_key_value_heads=0,
        head_size=_at_least(1, _require(decoder, "head_size", where), where + ".head_size"),
        input_names={**DEFAULT_INPUT_NAMES, **SSRU_INPUT_NAMES, **decoder.get("inputs", {})},
        output_names={**DEFAULT_OUTPUT_NAMES, **SSRU_OUTPUT_NAMES, **decoder.get("outputs", {})},
        session_options=decoder.get("session_options", {}),
        model_type="marian-ssru",
    )


def _parse_encoder(model: dict, decoder: DecoderConfig) -> EncoderConfig:
    """model.encoder; its session options are the decoder's where it has none, as the peer's are."""
    where = "model.encoder"
    encoder = _require(model, "encoder", "model")
    if not isinstance(encoder, dict):
        raise ConfigError(f"genai_config.json: '{where}' must be an object, got {encoder!r}")
    return EncoderConfig(
        filename=_require(encoder, "filename", where),
        hidden_size=_at_least(1, _require(encoder, "hidden_size", where), where + ".hidden_size"),
        input_names=dict(ENCODER_INPUT_NAMES, **encoder.get("inputs", {})),
        output_names=dict(ENCODER_OUTPUT_NAMES, **encoder.get("outputs", {})),
        session_options=encoder.get("session_options", decoder.session_options),
    )


def _layer_types(decoder: dict, layers: int, model_type: str) -> list[str] | None:
    """decoder.layer_types, which lfm2 needs: one str per layer (onnxruntime-genai's LFM2Cache refuses others)."""
    where = "genai_config.json: 'model.decoder.layer_types'"
    types = decoder.get("layer_types")
    if types is None:
        if model_type in LFM2_TYPES:
            raise ConfigError(f"{where} is missing: an lfm2 model names each layer's kind (conv or full_attention)")
        return None
    if not isinstance(types, list) or not all(isinstance(kind, str) for kind in types):
        raise ConfigError(f"{where} must be a list of strings, got {types!r}")
    if len(types) != layers:
        raise ConfigError(f"{where} has {len(types)} entries, but 'model.decoder.num_hidden_layers' is {layers}")
    return types


def _sliding_window(section, layers: int) -> SlidingWindow | None:
    """decoder.sliding_window, where it asks for a windowed KV cache (window_size > 0)."""
    where = "model.decoder.sliding_window"
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ConfigError(f"genai_config.json: '{where}' must be an object, got {section!r}")
    window = _as_int(section.get("window_size", 0), where + ".window_size")
    if window <= 0:
        return None
    if section.get("slide_key_value_cache", True) or section.get("slide_inputs", True):
        # onnxruntime-genai's other windowed cache, for QNN's fixed-shape graphs: not GroupQueryAttention's.
        raise ConfigError(f"genai_config.json: '{where}' slides the key-value cache or the inputs "
                          "(slide_key_value_cache / slide_inputs, true unless set false), onnxruntime-genai's "
                          "windowed cache for QNN graphs, which gentwin does not run")
    listed = section.get("layers", [])
    if not isinstance(listed, list) or not all(0 <= _as_int(layer, where + ".layers") < layers for layer in listed):
        raise ConfigError(f"genai_config.json: '{where}.layers' must list layer numbers below {layers}, got {listed!r}")
    return SlidingWindow(window, tuple(listed), _at_least(0, section.get("cache_slack", 0), where + ".cache_slack"))


def _parse_search(search: dict, context_length: int) -> dict:
    unknown = set(search) - set(PEER_SEARCH_DEFAULTS) - set(EXTRA_SEARCH_DEFAULTS)
    if unknown:
        raise ConfigError(f"genai_config.json: unknown search option(s) {sorted(unknown)}")
    options = dict(PEER_SEARCH_DEFAULTS, **EXTRA_SEARCH_DEFAULTS)
    options.update(search)
    if not options["max_length"]:
        options["max_length"] = context_length
    return options


def load_config(folder: str, model_file_required: bool = True) -> GenaiConfig:
    """Read FOLDER/genai_config.json; raise ConfigError naming whatever is missing or wrong. The model file
    it names must be there too, unless MODEL_FILE_REQUIRED is False (its bytes may come from memory:
    api.Config.add_model_data)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ConfigError(f"model folder not found: {folder!r}")
    path = os.path.join(folder, CONFIG_FILENAME)
    if not os.path.isfile(path):
        raise ConfigError(f"no {CONFIG_FILENAME} in model folder {folder!r}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise ConfigError(f"{path}: missing the 'model' section")
    model = raw["model"]
    model_type = _model_type(_require(model, "type", "model"))
    if isinstance(model.get("draft"), dict) and slides_its_cache(model.get("decoder")):
        raise ConfigError(SLIDING_CACHE_WITH_DRAFT)  # with a draft, the peer refuses it first, in these words
    decoder = _parse_decoder(_require(model, "decoder", "model"), model_type)
    context_length = _at_least(1, _require(model, "context_length", "model"), "model.context_length")
    vocab_size = _at_least(1, _require(model, "vocab_size", "model"), "model.vocab_size")
    config = GenaiConfig(
        folder=folder,
        model_type=model_type,
        vocab_size=vocab_size,
        context_length=context_length,
        bos_token_id=_token_id(model.get("bos_token_id", 0), "model.bos_token_id", vocab_size),
        eos_token_ids=_eos_ids(_require(model, "eos_token_id", "model"), vocab_size),
        pad_token_id=_token_id(model.get("pad_token_id", 0), "model.pad_token_id", vocab_size),
        decoder=decoder,
        search=_parse_search(raw.get("search", {}), context_length),
        raw=raw,
        encoder=_parse_encoder(model, decoder) if model_type in ENCODER_DECODER_TYPES else None,
    )
    if model_file_required:
        check_model_file(config)
    return config


def check_model_file(config: GenaiConfig) -> None:
    if not os.path.isfile(config.model_path):
        raise ConfigError(f"model file {config.decoder.filename!r} named in genai_config.json is missing from "
                          f"{config.folder!r}")
    if config.encoder and not os.path.isfile(config.encoder_path):
        raise ConfigError(f"encoder file {config.encoder.filename!r} named in genai_config.json is missing from "
                          f"{config.folder!r}")


def draft_config(config: GenaiConfig) -> GenaiConfig | None:
    """The draft model of draft-model speculative decoding: genai_config.json's `model.draft`, a decoder block
    of its own beside `model.decoder`, with the folder, vocabulary and special tokens the target's; None
    without one. Its file must be named and present, as the peer requires."""
    draft = config.raw["model"].get("draft")
    if draft is None:
        return None
    if not isinstance(draft, dict) or not draft.get("filename"):
        raise ConfigError("genai_config.json: 'model.draft' must be a decoder block with a 'filename'")
    draft_config = dataclasses.replace(config, decoder=_parse_decoder(draft, config.model_type))
    if not os.path.isfile(draft_config.model_path):
        raise ConfigError(f"draft model file {draft['filename']!r} named in genai_config.json is missing from "
                          f"{config.folder!r}")
    return draft_config
