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
