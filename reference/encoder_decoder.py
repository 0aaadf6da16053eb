"""An encoder-decoder model (marian-ssru) in numpy: the encoder graph loaded as the decoder's is
(gentwin/reference/decoder.py), and the shared state (gentwin/encoder_decoder.py) run on onnx's reference
kernels."""

from __future__ import annotations

import os

from gentwin import model_check
from gentwin.config import ConfigError
from gentwin.encoder_decoder import SsruState
from gentwin.reference.decoder import Graph, check_supported, map_external_weights
from gentwin.threads import peer_intra_op_threads


def load_encoder(config, _provider_config=None) -> Graph:
    """Read the encoder, check every operator has a kernel and its tensors are those genai_config.json names,
    then map its weights."""
    path = config.encoder_path
    proto = model_check.read_encoder(config)
    check_supported(proto, path)
    try:
        weights = map_external_weights(proto, os.path.dirname(path))
    except Exception as error:  # a missing, short or unreadable data file
        raise ConfigError(f"cannot load {path}: {error}") from error
    return Graph(proto, weights, frozenset(), peer_intra_op_threads(config.encoder.session_options))


class EncoderDecoderState(SsruState):
    def run_graph(self, graph: Graph, feeds: dict) -> dict:
        return graph.run(feeds)
