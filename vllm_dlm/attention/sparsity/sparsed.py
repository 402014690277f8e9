"""SparseD head-specific block masks, selected once from block importance scores.

At the switch step (the last full-attention step) each layer scores, per head, every
(query block, key block) tile by the mean of softmax(QK^T / sqrt(head_dim)) over the tile
(`ops.block_scores`), and keeps for each query block the `k = max(1, int(n * select) + 1)` best key
blocks (capped at n). With `isolated`, prompt key blocks and generated key blocks are ranked
separately, each with its own k, and the two selections are OR-ed, so generated tokens always keep
their own budget. (SparseD's code scales LLaDA's scores by 1/sqrt(n_heads); we use 1/sqrt(head_dim),
the attention's own scale.)
"""

import torch


def num_kept(num_blocks: int, select: float) -> int:
    return min(num_blocks, max(1, int(num_blocks * select) + 1))


def _top_blocks(scores: torch.Tensor, select: float) -> torch.Tensor:
    """scores [H, nQ, n] -> bool [H, nQ, n] keeping the top num_kept(n) per row."""
    n = scores.shape[-1]
    if n == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    index = scores.topk(num_kept(n, select), dim=-1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, index, True)


def select_key_blocks(scores: torch.Tensor, select: float, num_prompt_blocks: int | None = None) -> torch.Tensor:
    """scores [H, nQ, nK] block importance -> keep mask [H, nQ, nK] (bool).

    num_prompt_blocks: with isolated selection, the first num_prompt_blocks key blocks are the
    prompt's and are ranked apart from the rest; None ranks all key blocks together.
    """
    if num_prompt_blocks is None:
        return _top_blocks(scores, select)
    split = min(num_prompt_blocks, scores.shape[-1])
    return torch.cat(
        [_top_blocks(scores[..., :split], select), _top_blocks(scores[..., split:], select)], dim=-1
    )
