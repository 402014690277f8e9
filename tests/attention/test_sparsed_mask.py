"""SparseD block importance (Triton vs torch reference) and block selection."""

import pytest
import torch

from vllm_dlm.attention.ops.block_scores import block_scores
from vllm_dlm.attention.ops.reference import block_scores_reference
from vllm_dlm.attention.sparsity.sparsed import num_kept, select_key_blocks


@pytest.mark.parametrize(
    "seq_len, num_heads, num_kv_heads, head_dim, block_size",
    [(37, 4, 4, 32, 16), (70, 4, 2, 32, 32), (16, 2, 1, 64, 16), (129, 2, 2, 32, 64)],
)
def test_block_scores_match_reference(seq_len, num_heads, num_kv_heads, head_dim, block_size):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q = torch.randn(seq_len, num_heads, head_dim, generator=g)
    k = torch.randn(seq_len, num_kv_heads, head_dim, generator=g)
    got = block_scores(q, k, block_size, head_dim**-0.5)
    ref = block_scores_reference(q, k, block_size, head_dim**-0.5)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-4)
    # each query row's probabilities sum to 1: tile means weighted by tile sizes sum to rows
    n = ref.shape[-1]
    sizes = torch.full((n,), float(block_size))
    sizes[-1] = seq_len - (n - 1) * block_size
    torch.testing.assert_close((got * sizes[None, None, :]).sum(-1), torch.ones(num_heads, n), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bad", [8, 48])
def test_block_scores_reject_bad_block_size(bad):
    with pytest.raises(ValueError, match="block_size"):
        block_scores(torch.zeros(4, 2, 32), torch.zeros(4, 2, 32), bad, 1.0)


@pytest.mark.parametrize("n, select, expected", [(10, 0.3, 4), (3, 0.1, 1), (5, 1.0, 5), (1, 0.3, 1)])
def test_num_kept_follows_sparsed(n, select, expected):
    assert num_kept(n, select) == expected


def test_select_keeps_the_highest_scores_per_query_block():
    scores = torch.rand(2, 3, 10)
    mask = select_key_blocks(scores, 0.3)
    assert mask.sum(-1).eq(4).all()
    kept_min = scores.masked_fill(~mask, float("inf")).min(-1).values
    dropped_max = scores.masked_fill(mask, float("-inf")).max(-1).values
    assert (kept_min > dropped_max).all()


def test_isolated_selection_gives_generated_blocks_their_own_budget():
    scores = torch.zeros(1, 2, 8)
    scores[..., :5] = 1.0  # the prompt dominates: a joint top-k would take only prompt blocks
    joint = select_key_blocks(scores, 0.25)
    isolated = select_key_blocks(scores, 0.25, num_prompt_blocks=5)
    assert not joint[..., 5:].any()
    assert isolated[..., 5:].sum(-1).eq(num_kept(3, 0.25)).all()
    assert isolated[..., :5].sum(-1).eq(num_kept(5, 0.25)).all()


def test_select_one_keeps_every_block():
    assert select_key_blocks(torch.rand(2, 4, 6), 1.0, num_prompt_blocks=2).all()
