"""com.microsoft EmbedLayerNormalization: BERT/GPT-2 embedding lookup fused with layer normalisation."""

import numpy as np

from .contrib_op import ContribOp
from .layer_norms import layer_norm


class EmbedLayerNormalization(ContribOp):
    """embedding_sum = word[input_ids] + position[position_ids] (+ segment[segment_ids]);
    output = LayerNorm(embedding_sum) * gamma + beta; mask_index[b] = number of ones in mask[b]
    (zeros without a mask). position_ids default to 0..S-1 and may be [1, S] to serve every row.
    """

    def _run(
        self,
        input_ids,
        segment_ids,
        word_embedding,
        position_embedding,
        segment_embedding,
        gamma,
        beta,
        mask=None,
        position_ids=None,
        epsilon=1e-12,
        mask_index_type=1,
    ):
        batch, length = input_ids.shape
        if position_ids is None:
            position_ids = np.arange(length)[None]  # [1, S]
        embedding_sum = word_embedding[input_ids] + position_embedding[position_ids]  # [B, S, H]
        if segment_ids is not None:
            embedding_sum = embedding_sum + segment_embedding[segment_ids]

        output = layer_norm(embedding_sum, gamma, beta, epsilon)  # [B, S, H]

        if mask is None:
            mask_index = np.zeros(batch, np.int32)
        else:
            mask_index = np.count_nonzero(mask == 1, axis=-1).astype(np.int32)  # [B]
        return self.outputs(output.astype(word_embedding.dtype, copy=False), mask_index, embedding_sum)
