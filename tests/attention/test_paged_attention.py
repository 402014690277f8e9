"""Triton paged attention vs its torch reference, on fresh random inputs of awkward sizes
(shuffled pages, query lengths and key lengths not multiples of the tiles, GQA)."""

import pytest
import torch

from vllm_dlm.attention.ops.paged_attention import paged_attention
from vllm_dlm.attention.ops.reference import (
    paged_attention_reference,
    random_paged_batch,
    write_kv_reference,
)

TOLERANCE = {torch.float32: 2e-4, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "q_lens, kv_extra, num_heads, num_kv_heads, head_dim, page_size",
    [
        ([1, 7, 23], [0, 5, 40], 4, 4, 32, 16),
        ([19, 3], [13, 0], 8, 2, 64, 16),
        ([33], [70], 4, 1, 32, 32),
        ([5, 16, 2, 9], [27, 0, 1, 16], 6, 3, 48, 16),
    ],
)
def test_paged_attention_matches_reference(causal, q_lens, kv_extra, num_heads, num_kv_heads, head_dim, page_size):
    kv_lens = [q + e for q, e in zip(q_lens, kv_extra)]
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch(
        q_lens, kv_lens, num_heads, num_kv_heads, head_dim, page_size, torch.float32
    )
    scale = head_dim**-0.5
    out = torch.full_like(q, float("nan"))  # poisoned: every row must be written
    paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, max(q_lens), scale, causal, out=out)
    ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, scale, causal)
    torch.testing.assert_close(out, ref, atol=TOLERANCE[torch.float32], rtol=TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paged_attention_low_precision_inputs(dtype):
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch([9, 4], [30, 17], 4, 2, 32, 16, dtype)
    out = paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 9, 32**-0.5)
    ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, 32**-0.5)
    torch.testing.assert_close(out.float(), ref.float(), atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


def test_write_kv_reference_scatters_to_slots_and_skips_padding():
    k_cache = torch.zeros(4, 16, 2, 8)
    v_cache = torch.zeros(4, 16, 2, 8)
    key, value = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    write_kv_reference(key, value, k_cache, v_cache, torch.tensor([17, -1, 63]))
    torch.testing.assert_close(k_cache[1, 1], key[0])
    torch.testing.assert_close(v_cache[3, 15], value[2])
    assert int((k_cache != 0).any(-1).any(-1).sum()) == 2


def random_block_mask(num_reqs, num_heads, kv_lens, mask_block, density, seed):
    """[R, H, nQ, nK] with every query block keeping at least one key block (its diagonal)."""
    g = torch.Generator().manual_seed(seed)
    n = -(-max(kv_lens) // mask_block)
    mask = torch.rand(num_reqs, num_heads, n, n, generator=g) < density
    mask |= torch.eye(n, dtype=torch.bool)
    return mask


@pytest.mark.parametrize("mask_block", [16, 32])
@pytest.mark.parametrize("density", [0.3, 0.7])
def test_block_sparse_attention_matches_masked_reference(mask_block, density):
    q_lens, kv_lens = [45, 7, 70], [45, 30, 70]  # full-sequence rows and a cached-prefix row
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch(q_lens, kv_lens, 4, 2, 32, 16, torch.float32)
    mask = random_block_mask(3, 4, kv_lens, mask_block, density, seed=int(torch.seed() % 2**31))
    out = torch.full_like(q, float("nan"))
    paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, max(q_lens), 32**-0.5, out=out,
                    block_mask=mask, mask_block=mask_block)
    ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, 32**-0.5,
                                    block_mask=mask, mask_block=mask_block)
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=2e-4)


def test_all_true_block_mask_equals_dense():
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch([33, 12], [33, 50], 4, 4, 32, 16, torch.float32)
    dense = paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 33, 32**-0.5)
    full = torch.ones(2, 4, 4, 4, dtype=torch.bool)
    masked = paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 33, 32**-0.5, block_mask=full, mask_block=16)
    torch.testing.assert_close(masked, dense, atol=0, rtol=0)


@pytest.mark.parametrize("bad", [dict(mask_block=24), dict(mask_block=8)])
def test_block_mask_rejects_bad_block_size(bad):
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch([4], [4], 4, 4, 32, 16, torch.float32)
    with pytest.raises(ValueError, match="mask_block"):
        paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 4, 1.0,
                        block_mask=torch.ones(1, 4, 1, 1, dtype=torch.bool), **bad)
