"""SparseD block importance (Triton vs torch reference) and block selection."""

import pytest
import torch

from vllm_dlm.attention.ops.block_scores import block_scores
from vllm_dlm.attention.ops.paged_attention import paged_attention
from vllm_dlm.attention.ops.reference import block_scores_reference, random_paged_batch
from vllm_dlm.attention.sparsity.sparsed import (
    expand_lists,
    lists_to_mask,
    mask_to_lists,
    num_kept,
    num_prompt_blocks,
    select_key_blocks,
)


@pytest.mark.parametrize(
    "seq_len, num_heads, num_kv_heads, head_dim, block_size, key_start_block",
    [(37, 4, 4, 32, 16, 0), (70, 4, 2, 32, 32, 1), (16, 2, 1, 64, 16, 0), (129, 2, 2, 32, 64, 2),
     (200, 2, 2, 32, 128, 1)],
)
def test_block_scores_match_reference(seq_len, num_heads, num_kv_heads, head_dim, block_size, key_start_block):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q = torch.randn(seq_len, num_heads, head_dim, generator=g)
    k = torch.randn(seq_len, num_kv_heads, head_dim, generator=g)
    got = block_scores(q, k, block_size, head_dim**-0.5, key_start_block=key_start_block)
    ref = block_scores_reference(q, k, block_size, head_dim**-0.5, key_start_block=key_start_block)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-4)
    # each query row's probabilities sum to 1, so each query block's tile sums add up to its rows
    nq = ref.shape[1]
    rows = torch.full((nq,), float(block_size))
    rows[-1] = seq_len - (nq - 1) * block_size
    torch.testing.assert_close((got * block_size**2).sum(-1), rows.expand(num_heads, nq), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("seq_len", [33, 80])
def test_block_scores_with_the_attentions_head_major_lse_after_warm_up(seq_len):
    """The switch step passes FlashAttention's log-sum-exp ([Hq, L] buffer seen as [L, Hq]); the
    kernels are compiled once at engine start (`warm_up`) for every length."""
    from vllm_dlm.attention.ops.block_scores import warm_up

    warm_up(4, 2, 32, 16, torch.float32, "cpu")
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q = torch.randn(seq_len, 4, 32, generator=g)
    k = torch.randn(seq_len, 2, 32, generator=g)
    scores = torch.einsum("qhd,khd->hqk", q, k.repeat_interleave(2, 1)) * 32**-0.5
    lse = scores.logsumexp(-1).contiguous().t()  # [L, Hq] view of a head-major buffer
    got = block_scores(q, k, 16, 32**-0.5, lse=lse)
    torch.testing.assert_close(got, block_scores_reference(q, k, 16, 32**-0.5), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("bad", [8, 48])
def test_block_scores_reject_bad_block_size(bad):
    with pytest.raises(ValueError, match="block_size"):
        block_scores(torch.zeros(4, 2, 32), torch.zeros(4, 2, 32), bad, 1.0)


@pytest.mark.parametrize("n, select, expected", [(10, 0.3, 4), (3, 0.1, 1), (5, 1.0, 5), (1, 0.3, 1)])
def test_num_kept_follows_sparsed(n, select, expected):
    assert num_kept(n, select) == expected


def _selected_mask(scores, select, prompt_blocks=None, generated=None):
    blocks, counts = select_key_blocks(scores, select, prompt_blocks, generated)
    kept = torch.arange(blocks.shape[-1]) < counts[..., None]
    assert ((blocks[..., 1:] > blocks[..., :-1]) | ~kept[..., 1:]).all(), "kept ids ascend, no duplicates"
    return lists_to_mask(blocks, counts, scores.shape[-1])


def test_select_keeps_the_highest_scores_per_query_block():
    scores = torch.rand(2, 3, 10)
    mask = _selected_mask(scores, 0.3)
    assert mask.sum(-1).eq(4).all()
    kept_min = scores.masked_fill(~mask, float("inf")).min(-1).values
    dropped_max = scores.masked_fill(mask, float("-inf")).max(-1).values
    assert (kept_min > dropped_max).all()


def test_isolated_selection_follows_sparsed():
    """Prompt blocks: the joint top-k(nK) restricted to the prompt; generated blocks: their own
    top-k(nG) under their own scores."""
    scores = torch.rand(3, 4, 9)
    generated = torch.rand(3, 4, 3)
    mask = _selected_mask(scores, 0.3, prompt_blocks=6, generated=generated)
    joint = _selected_mask(scores, 0.3)
    assert torch.equal(mask[..., :6], joint[..., :6])
    own = _selected_mask(generated, 0.3)
    assert torch.equal(mask[..., 6:], own)
    assert mask[..., 6:].sum(-1).eq(num_kept(3, 0.3)).all()


def test_isolated_selection_gives_generated_blocks_their_own_budget():
    scores = torch.zeros(1, 2, 8)
    scores[..., :5] = 1.0  # the prompt dominates: a joint top-k would take only prompt blocks
    joint = _selected_mask(scores, 0.25)
    isolated = _selected_mask(scores, 0.25, prompt_blocks=5, generated=torch.rand(1, 2, 3))
    assert not joint[..., 5:].any()
    assert isolated[..., 5:].sum(-1).eq(num_kept(3, 0.25)).all()


def test_prompt_blocks_leave_at_least_one_generated_block():
    assert num_prompt_blocks(300, 332, 128) == 2  # the block holding the prompt's end is the prompt's
    assert num_prompt_blocks(256, 288, 128) == 2
    assert num_prompt_blocks(250, 256, 128) == 1  # one block holds both: it counts as generated


def test_select_one_keeps_every_block():
    assert _selected_mask(torch.rand(2, 4, 6), 1.0, prompt_blocks=2, generated=torch.rand(2, 4, 4)).all()


def test_mask_and_lists_round_trip():
    mask = torch.rand(3, 5, 7) < 0.4
    blocks, counts = mask_to_lists(mask)
    assert torch.equal(lists_to_mask(blocks, counts, 7), mask)


def test_expanding_lists_to_smaller_blocks_keeps_the_same_positions():
    mask = torch.rand(2, 3, 3) < 0.5
    mask |= torch.eye(3, dtype=torch.bool)
    blocks, counts = expand_lists(*mask_to_lists(mask), 4)
    fine = lists_to_mask(blocks, counts, 12)
    assert torch.equal(fine, mask.repeat_interleave(4, 1).repeat_interleave(4, 2))


@pytest.mark.parametrize("block_size", [16, 128])
def test_block_scores_from_the_attention_kernels_lse(block_size):
    """The switch step reuses the attention's log-sum-exp instead of recomputing row statistics."""
    seq_len = 150
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch([seq_len], [seq_len], 4, 2, 32, 16, torch.float32)
    lse = torch.full((seq_len, 4), float("nan"))
    paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, seq_len, 32**-0.5, lse=lse)
    k = k_cache[bt[0].long()].reshape(-1, 2, 32)[:seq_len]
    got = block_scores(q, k, block_size, 32**-0.5, lse=lse)
    torch.testing.assert_close(got, block_scores_reference(q, k, block_size, 32**-0.5), atol=1e-6, rtol=1e-4)


def test_engine_start_warms_the_servers_block_size():
    from vllm.config import VllmConfig, set_current_vllm_config

    from vllm_dlm.attention.impl import _server_mask_block_size

    assert _server_mask_block_size() == 128  # SparseD's default
    config = VllmConfig()
    config.additional_config = {"dlm": {"block_size": 64}}
    with set_current_vllm_config(config):
        assert _server_mask_block_size() == 64
