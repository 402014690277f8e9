"""Triton paged attention vs its torch reference, on fresh random inputs of awkward sizes
(shuffled pages, query lengths and key lengths not multiples of the tiles, GQA, queries in the
middle of their keys as in a dual-cache step), dense and with SparseD block lists, Sparse-dLLM
token lists and split-KV."""

import pytest
import torch

from vllm_dlm.attention.ops.paged_attention import KernelConfig, TokenLists, paged_attention
from vllm_dlm.attention.ops.reference import (
    paged_attention_reference,
    random_paged_batch,
    write_kv_reference,
)
from vllm_dlm.attention.sparsity.sparsed import mask_to_lists, pack_block_lists

TOLERANCE = {torch.float32: 2e-4, torch.bfloat16: 2e-2}
SCALE = 32**-0.5


def _gen():
    return torch.Generator().manual_seed(torch.seed() % 2**31)


def _poisoned(q):
    return torch.full_like(q, float("nan"))  # every row must be written


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
    out = _poisoned(q)
    paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, max(q_lens), scale, causal, out=out)
    ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, scale, causal)
    torch.testing.assert_close(out, ref, atol=TOLERANCE[torch.float32], rtol=TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paged_attention_low_precision_inputs(dtype):
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch([9, 4], [30, 17], 4, 2, 32, 16, dtype)
    out = paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 9, SCALE)
    ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, SCALE)
    torch.testing.assert_close(out.float(), ref.float(), atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


def test_queries_in_the_middle_of_their_keys():
    """Dual cache: the block's queries sit before the cached suffix, at explicit positions."""
    q_lens, kv_lens, starts = [16, 9, 21], [70, 40, 21], [37, 0, 0]
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch(q_lens, kv_lens, 4, 2, 32, 16, torch.float32)
    query_pos = torch.tensor(starts, dtype=torch.int32)
    for causal in (False, True):
        out = _poisoned(q)
        paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 21, SCALE, causal, out=out, query_pos=query_pos)
        ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, SCALE, causal, query_pos=query_pos)
        torch.testing.assert_close(out, ref, atol=2e-4, rtol=2e-4)


def _random_masks(num_heads, kv_lens, block_size, density, dense_rows, g):
    """Per request a keep mask [H, nB, nB] (each query block keeps its diagonal block) or None."""
    masks = []
    for r, n in enumerate(kv_lens):
        if r in dense_rows:
            masks.append(None)
            continue
        nb = -(-n // block_size)
        mask = torch.rand(num_heads, nb, nb, generator=g) < density
        masks.append(mask | torch.eye(nb, dtype=torch.bool))
    return masks


@pytest.mark.parametrize("block_size", [16, 32])
@pytest.mark.parametrize("density", [0.3, 0.7])
@pytest.mark.parametrize("num_splits", [1, 3])
def test_block_lists_match_masked_reference(block_size, density, num_splits):
    # full-sequence rows, a dense row, and a row whose queries start mid-block (cached step)
    q_lens, kv_lens, starts = [45, 7, 70, 11], [45, 30, 70, 61], [0, 23, 0, 19]
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch(q_lens, kv_lens, 4, 2, 32, 16, torch.float32)
    query_pos = torch.tensor(starts, dtype=torch.int32)
    masks = _random_masks(4, kv_lens, block_size, density, dense_rows={1}, g=_gen())
    blocks = pack_block_lists([None if m is None else mask_to_lists(m) for m in masks], block_size, "cpu")
    out = _poisoned(q)
    paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, max(q_lens), SCALE, out=out,
                    query_pos=query_pos, blocks=blocks, num_splits=num_splits)
    ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, SCALE,
                                    query_pos=query_pos, blocks=blocks)
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=2e-4)


def test_all_kept_block_lists_equal_dense():
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch([33, 12], [33, 50], 4, 4, 32, 16, torch.float32)
    dense = paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 33, SCALE)
    full = [mask_to_lists(torch.ones(4, 3, 3, dtype=torch.bool)), mask_to_lists(torch.ones(4, 4, 4, dtype=torch.bool))]
    blocks = pack_block_lists(full, 16, "cpu")
    masked = paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 33, SCALE, blocks=blocks)
    torch.testing.assert_close(masked, dense, atol=0, rtol=0)


def _random_token_lists(q_lens, kv_lens, starts, keep, dense_rows, g):
    """Per request its kept key positions (the query block always kept), packed; some rows dense."""
    tokens, meta, offset = [], [], 0
    for r, (ql, n, s) in enumerate(zip(q_lens, kv_lens, starts)):
        if r in dense_rows:
            meta.append((-1, 0))
            continue
        kept = torch.rand(n, generator=g) < keep
        kept[s : s + ql] = True
        pos = kept.nonzero().squeeze(-1).to(torch.int32)
        tokens.append(pos)
        meta.append((offset, pos.numel()))
        offset += pos.numel()
    return TokenLists(torch.cat(tokens), torch.tensor(meta, dtype=torch.int64))


@pytest.mark.parametrize("num_splits", [1, 4])
@pytest.mark.parametrize("keep", [0.2, 0.6])
def test_token_lists_match_reference(num_splits, keep):
    q_lens, kv_lens, starts = [16, 5, 32], [90, 40, 77], [40, 35, 0]
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch(q_lens, kv_lens, 4, 2, 32, 16, torch.float32)
    query_pos = torch.tensor(starts, dtype=torch.int32)
    tokens = _random_token_lists(q_lens, kv_lens, starts, keep, dense_rows={1}, g=_gen())
    out = _poisoned(q)
    paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 32, SCALE, out=out, query_pos=query_pos,
                    tokens=tokens, num_splits=num_splits)
    ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, SCALE, query_pos=query_pos,
                                    tokens=tokens)
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("num_splits", [1, 3])
def test_token_lists_with_sparsed_bits_match_reference(num_splits):
    """Eviction and SparseD composed: kept tokens, further restricted per head by the keep bits of
    the query's SparseD block (rows for the query blocks the step's queries touch)."""
    q_lens, kv_lens, starts = [16, 20, 9], [90, 77, 40], [40, 30, 0]
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch(q_lens, kv_lens, 4, 2, 32, 16, torch.float32)
    query_pos = torch.tensor(starts, dtype=torch.int32)
    g = _gen()
    tokens = _random_token_lists(q_lens, kv_lens, starts, 0.6, dense_rows=set(), g=g)
    bits, meta, offset = [], [], 0
    for r, (ql, n, s) in enumerate(zip(q_lens, kv_lens, starts)):
        if r == 2:
            meta.append((-1, 0, 0, 0))
            continue
        qb0, qb1, nkb = s // 16, (s + ql - 1) // 16, -(-n // 16)
        rows = torch.rand(4, qb1 - qb0 + 1, nkb, generator=g) < 0.5
        rows[:, :, s // 16] = True  # every query keeps some key
        bits.append(rows.to(torch.uint8).flatten())
        meta.append((offset, qb0, qb1 - qb0 + 1, nkb))
        offset += rows.numel()
    tokens.bits, tokens.bits_meta, tokens.bits_block_size = torch.cat(bits), torch.tensor(meta), 16
    out = _poisoned(q)
    paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 20, SCALE, out=out, query_pos=query_pos,
                    tokens=tokens, num_splits=num_splits)
    ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, SCALE, query_pos=query_pos,
                                    tokens=tokens)
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=2e-4)
    plain = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, SCALE, query_pos=query_pos,
                                      tokens=TokenLists(tokens.tokens, tokens.meta))
    assert not torch.allclose(ref, plain), "the bits must matter in this test"


def test_split_kv_equals_one_split():
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch([3, 16], [150, 99], 4, 2, 32, 16, torch.float32)
    one = paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 16, SCALE)
    five = paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 16, SCALE, num_splits=5)
    torch.testing.assert_close(five, one, atol=2e-5, rtol=2e-5)


def test_log_sum_exp_matches_reference():
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch([37, 20], [37, 20], 4, 2, 32, 16, torch.float32)
    lse = torch.full(q.shape[:2], float("nan"))
    ref_lse = torch.zeros(q.shape[:2])
    paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 37, SCALE, lse=lse)
    paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, SCALE, lse=ref_lse)
    torch.testing.assert_close(lse, ref_lse, atol=2e-5, rtol=2e-5)


def test_larger_tiles_match_reference():
    """The GPU's tile shapes (here through the interpreter): 64-row query tiles, 32-key tiles."""
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch([70, 9], [70, 100], 4, 4, 32, 16, torch.float32)
    out = paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 70, SCALE, config=KernelConfig(64, 32))
    ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, SCALE)
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=2e-4)


def test_write_kv_reference_scatters_to_slots_and_skips_padding():
    k_cache = torch.zeros(4, 16, 2, 8)
    v_cache = torch.zeros(4, 16, 2, 8)
    key, value = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    write_kv_reference(key, value, k_cache, v_cache, torch.tensor([17, -1, 63]))
    torch.testing.assert_close(k_cache[1, 1], key[0])
    torch.testing.assert_close(v_cache[3, 15], value[2])
    assert int((k_cache != 0).any(-1).any(-1).sum()) == 2


@pytest.mark.parametrize("bad", [24, 8])
def test_block_lists_reject_bad_block_size(bad):
    q, k_cache, v_cache, bt, qsl, seq_lens = random_paged_batch([4], [4], 4, 4, 32, 16, torch.float32)
    blocks = pack_block_lists([mask_to_lists(torch.ones(4, 1, 1, dtype=torch.bool))], bad, "cpu")
    with pytest.raises(ValueError, match="block_size"):
        paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 4, 1.0, blocks=blocks)
