"""SparseD through FlashAttention-3's varlen paged interface: the virtual-sequence construction
(per head, request and query block, over per-head pages of the packed cache) against the masked
reference, with a torch twin of FA3 standing in on CPU (the GPU check is in
benchmarks/bench_attention_kernel.py)."""

import pytest
import torch

from tests.attention.page_eviction_check import packed_batch
from tests.attention.virtual_sequences_check import Batch, step_vs_block_lists, step_with_masks
from vllm_dlm.attention.impl import split_kv_cache
from vllm_dlm.attention.ops.fa3_sparse import RowInfo, sparse_varlen_attention, supports
from vllm_dlm.attention.ops.reference import paged_attention_reference, varlen_paged_attention_reference
from vllm_dlm.attention.sparsity.sparsed import mask_to_lists, pack_block_lists


@pytest.mark.parametrize("num_kv_heads", [4, 2])
@pytest.mark.parametrize("block_size", [16, 32])
def test_virtual_sequences_match_the_masked_reference(num_kv_heads, block_size):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q_lens, kv_lens, starts = [70, 9, 40, 16], [70, 55, 40, 90], [0, 30, 0, 41]
    q, kv, bt, qsl, seq_lens = packed_batch(q_lens, kv_lens, 4, num_kv_heads, 32, 16, g)
    k_cache, v_cache = split_kv_cache(kv, 32)
    assert supports(k_cache, 16, block_size, causal=False)
    masks, rows = [], []
    for r, (ql, n, s) in enumerate(zip(q_lens, kv_lens, starts)):
        nb = -(-n // block_size)
        mask = None
        if r != 1:  # row 1 dense
            mask = (torch.rand(4, nb, nb, generator=g) < 0.4) | torch.eye(nb, dtype=torch.bool)
        masks.append(mask)
        rows.append(RowInfo(int(qsl[r]), ql, s, n, None if mask is None else mask_to_lists(mask), block_size))
    out = torch.full_like(q, float("nan"))
    lse = sparse_varlen_attention(q, k_cache, v_cache, out, bt, rows, 32**-0.5,
                                  varlen_paged_attention_reference, return_lse=True)
    blocks = pack_block_lists([r.lists for r in rows], block_size, "cpu")
    ref_lse = torch.zeros(q.shape[:2])
    ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, 32**-0.5,
                                    query_pos=torch.tensor(starts), blocks=blocks, lse=ref_lse)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(lse, ref_lse, atol=2e-5, rtol=2e-5)


def test_rows_with_different_block_sizes_in_one_call():
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q_lens, kv_lens = [64, 50], [64, 50]
    q, kv, bt, qsl, seq_lens = packed_batch(q_lens, kv_lens, 4, 4, 32, 16, g)
    k_cache, v_cache = split_kv_cache(kv, 32)
    rows = []
    for r, (n, bs) in enumerate(zip(kv_lens, (16, 32))):
        nb = -(-n // bs)
        mask = (torch.rand(4, nb, nb, generator=g) < 0.4) | torch.eye(nb, dtype=torch.bool)
        rows.append(RowInfo(int(qsl[r]), n, 0, n, mask_to_lists(mask), bs))
    out = torch.zeros_like(q)
    sparse_varlen_attention(q, k_cache, v_cache, out, bt, rows, 32**-0.5, varlen_paged_attention_reference)
    for r, row in enumerate(rows):
        one = pack_block_lists([row.lists if i == r else None for i in range(2)], row.block_size, "cpu")
        ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, 32**-0.5, blocks=one)
        qs, qe = int(qsl[r]), int(qsl[r + 1])
        torch.testing.assert_close(out[qs:qe], ref[qs:qe], atol=2e-5, rtol=2e-5)


def test_needs_whole_pages_and_the_packed_layout():
    kv = torch.zeros(4, 2, 16, 64)
    k_cache, _ = split_kv_cache(kv, 32)
    assert supports(k_cache, 16, 128, causal=False)
    assert not supports(k_cache, 16, 128, causal=True)
    assert not supports(torch.zeros(4, 16, 2, 32), 16, 128, causal=False)  # NHD
    k32, _ = split_kv_cache(torch.zeros(4, 2, 32, 64), 32)
    assert not supports(k32, 32, 16, causal=False)  # blocks smaller than a page



def _block_lists_reference(q, k_cache, v_cache, bt, qsl, seq_lens, query_pos, blocks, max_q, scale):
    return paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, scale, query_pos=query_pos,
                                     blocks=blocks)


@pytest.mark.parametrize("all_layers", [True, False])
def test_step_virtual_sequences_for_all_layers_match_the_reference(all_layers, monkeypatch):
    """The engine's path: virtual sequences of every layer built once per step (or, over the size
    cap, per layer), each layer checked against the masked reference; a later step at the same
    positions reuses each row's geometry, a step at new positions rebuilds it."""
    from vllm_dlm.attention.sparsity import plan

    if not all_layers:
        monkeypatch.setattr(plan, "VIRTUAL_SEQUENCES_BYTES", 0)
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q_lens, kv_lens, starts = [23, 9, 40, 32], [87, 55, 40, 130], [40, 30, 0, 64]
    block_sizes, layers = [32, None, 16, 64], ["l0", "l1", "l2"]
    batch = Batch(q_lens, kv_lens, 4, 2, 32, 16, g, "cpu", torch.float32)
    step = step_with_masks(q_lens, kv_lens, starts, block_sizes, layers, 4, g)

    def error(step):
        return step_vs_block_lists(step, batch, layers, varlen_paged_attention_reference, _block_lists_reference)

    assert error(step) < 2e-5
    kept = {r: m.geometry for r, m in step.masks.items()}
    assert all((geometry is not None) == all_layers for geometry in kept.values())
    again = type(step)(masks=step.masks, rows=list(step.rows))
    assert error(again) < 2e-5
    assert all(m.geometry is kept[r] for r, m in again.masks.items())  # reused, not rebuilt
    if all_layers:  # row 0 moves to its next block: 16 queries at position 64
        q_lens[0], starts[0] = 16, 64
        batch = Batch(q_lens, kv_lens, 4, 2, 32, 16, g, "cpu", torch.float32)
        qsl = batch.qsl.tolist()
        moved = type(step)(masks=step.masks, rows=[(qsl[r], q_lens[r], starts[r], kv_lens[r]) for r in range(4)])
        assert error(moved) < 2e-5
        assert moved.masks[0].geometry is not kept[0] and moved.masks[2].geometry is kept[2]
