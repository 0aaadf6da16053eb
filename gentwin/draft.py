"""genai_config.json's `model.draft`: the peer's checks of a speculative-decoding draft model when the Model loads.

A `draft` section names a second, smaller decoder (a model.decoder section of its own) that runs ahead of the
target to propose tokens the target then verifies (gentwin.speculative). onnxruntime-genai refuses a draft it
cannot use when the Model loads; gentwin makes the same checks with the peer's words, so a folder the peer
refuses is refused here too. The search options drafting does not take are refused when a Generator is made
(speculative.check_for_generator).
"""

from __future__ import annotations

import os

import onnx

from gentwin.config import SLIDING_CACHE_WITH_DRAFT, ConfigError, GenaiConfig, slides_its_cache
from gentwin.graph_inputs import declared_shape

SPECULATIVE = "Speculative decoding does not support"


def draft_section(config: GenaiConfig) -> dict | None:
    draft = config.raw["model"].get("draft")
    if draft is not None and not isinstance(draft, dict):
        raise ConfigError(f"genai_config.json: 'model.draft' must be an object, got {draft!r}")
    return draft


def check_draft_config(config: GenaiConfig) -> None:
    """What the peer checks of a draft before it loads either model (its SpeculativeDecodingModel)."""
    draft = draft_section(config)
    if draft is None:
        return
    target = config.raw["model"]["decoder"]
    if not draft.get("filename"):
        raise ConfigError("model.draft.filename is not set in genai_config.json.")
    if _providers(target) != _providers(draft):
        raise ConfigError("Target and draft must use the same execution provider. "
                          "Cross-EP speculative decoding is not supported in this release.")
    if target.get("pipeline") or draft.get("pipeline"):
        raise ConfigError(f"{SPECULATIVE} pipeline models in this release; "
                          "target and draft must be plain decoder-only LLMs.")
    if any(config.raw["model"].get(part, {}).get("filename") for part in ("vision", "speech")):
        raise ConfigError(f"{SPECULATIVE} multimodal (vision/audio) models in this release; "
                          "target and draft must be plain decoder-only LLMs.")
    if slides_its_cache(draft):  # the target's own sliding cache is refused by gentwin.config already
        raise ConfigError(SLIDING_CACHE_WITH_DRAFT)
    if target.get("layer_types") or draft.get("layer_types"):
        raise ConfigError(f"{SPECULATIVE} LFM2 (hybrid SSM/attention) models in this release; "
                          "their rolling convolution state cannot be rewound.")


def _providers(decoder: dict) -> list:
    return decoder.get("session_options", {}).get("provider_options", [])


def check_draft_graph(config: GenaiConfig, target: onnx.ModelProto) -> None:
    """Once the TARGET graph loads: the draft's model file exists, and its logits are as wide as the target's."""
    draft = draft_section(config)
    if draft is None:
        return
    path = os.path.join(config.folder, draft["filename"])
    if not os.path.isfile(path):
        raise ConfigError(f"model file {draft['filename']!r} named in genai_config.json's model.draft is missing "
                          f"from {config.folder!r}")
    target_vocab = _logits_width(target, config.decoder.output_names["logits"], "Target")
    draft_vocab = _logits_width(onnx.load(path, load_external_data=False),
                                draft.get("outputs", {}).get("logits", "logits"), "Draft")
    if target_vocab != draft_vocab:
        raise ConfigError(f"Target and draft logit dimensions don't match. Target vocab: {target_vocab}, "
                          f"Draft vocab: {draft_vocab}. Target and draft must share the same vocabulary.")


def _logits_width(proto: onnx.ModelProto, name: str, role: str) -> int:
    shapes = {value.name: declared_shape(value) for value in proto.graph.output}
    if name not in shapes:
        raise ConfigError(f"{role} logits output '{name}' was not found in the ONNX model.")
    if not shapes[name]:
        raise ConfigError(f"{role} logits output '{name}' must have at least one dimension.")
    width = shapes[name][-1]
    if not isinstance(width, int) or width <= 0:
        raise ConfigError(f"{role} logits output '{name}' must have a static positive vocabulary dimension.")
    return width
