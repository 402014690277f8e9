"""Sparse-dLLM token selection (`sparsity.eviction`) against the reference's filter_cache
re-implementation, on fresh random queries/keys, GQA and awkward lengths."""

import pytest
import torch

from tests.reference.sparse_dllm import kept_positions
from vllm_dlm.attention.sparsity.eviction import pack_token_lists, select_kept_tokens


@pytest.mark.parametrize("seq_len, block_start, block_len, heads, kv_heads, keep, kernel", [
    (97, 40, 16, 4, 4, 0.5, 3), (130, 0, 32, 4, 2, 0.3, 1), (61, 45, 16, 8, 2, 0.7, 5),
])
def test_kept_tokens_match_the_reference(seq_len, block_start, block_len, heads, kv_heads, keep, kernel):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q = torch.randn(seq_len, heads, 32, generator=g)
    k = torch.randn(seq_len, kv_heads, 32, generator=g)
    block = q[block_start : block_start + block_len]
    got = select_kept_tokens(block, k, block_start, keep, kernel)
    ref = kept_positions(block.transpose(0, 1), k.transpose(0, 1), block_start, keep, kernel)
    expected = torch.cat([ref, torch.arange(block_start, block_start + block_len)]).sort().values
    assert torch.equal(got.long(), expected)
    assert got.numel() == int((seq_len - block_len) * keep) + block_len


def test_token_lists_pack_rows_with_offsets():
    a, b = torch.tensor([0, 3, 5], dtype=torch.int32), torch.tensor([1, 2], dtype=torch.int32)
    lists = pack_token_lists([a, None, b], "cpu")
    assert lists.tokens.tolist() == [0, 3, 5, 1, 2]
    assert lists.meta.tolist() == [[0, 3], [-1, 0], [3, 2]]


@pytest.mark.parametrize("seq_len, block_start, block_len, page, keep, kernel", [
    (97, 40, 16, 16, 0.5, 3), (130, 0, 32, 16, 0.3, 1), (61, 45, 16, 8, 0.7, 5), (50, 17, 16, 16, 0.5, 3),
])
def test_kept_pages_match_the_reference(seq_len, block_start, block_len, page, keep, kernel):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q = torch.randn(seq_len, 4, 32, generator=g)
    k = torch.randn(seq_len, 2, 32, generator=g)
    block = q[block_start : block_start + block_len]
    positions, pages = select_kept_tokens(block, k, block_start, keep, kernel, page_size=page)
    ref = kept_positions(block.transpose(0, 1), k.transpose(0, 1), block_start, keep, kernel, page_size=page)
    expected = torch.cat([ref, torch.arange(block_start, block_start + block_len)]).sort().values
    assert torch.equal(positions.long(), expected)
    assert torch.equal(pages.long(), (expected // page).unique())
    block_pages = (block_start + block_len - 1) // page - block_start // page + 1
    candidates = -(-seq_len // page) - block_pages
    assert pages.numel() == int(candidates * keep) + block_pages


def test_kept_page_tables_on_the_fa3_twin_equal_token_lists():
    """FA3 over per-layer block tables of the kept pages == the token-list reference over the
    same positions (rows without eviction unchanged; the partial last page kept or not)."""
    from tests.attention.test_fa3_sparse import _packed_batch
    from vllm_dlm.attention.impl import split_kv_cache
    from vllm_dlm.attention.ops.reference import paged_attention_reference, varlen_paged_attention_reference
    from vllm_dlm.attention.sparsity.eviction import RequestKeptTokens, kept_page_tables

    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    page = 16
    q_lens, kv_lens, starts = [16, 16, 9], [100, 70, 40], [48, 16, 31]
    q, kv, bt, qsl, seq_lens = _packed_batch(q_lens, kv_lens, 4, 2, 32, page, g)
    k_cache, v_cache = split_kv_cache(kv, 32)
    kept_rows = {}
    for row in (0, 1):  # row 2 attends to everything
        kept = RequestKeptTokens(starts[row], kv_lens[row])
        for layer in ("a", "b"):
            keys = k_cache[bt[row, : -(-kv_lens[row] // page)].long()].flatten(0, 1)[: kv_lens[row]]
            block_q = torch.randn(q_lens[row], 4, 32, generator=g)
            kept.layers[layer], kept.pages[layer] = select_kept_tokens(block_q, keys, starts[row], 0.5, 3, page)
        kept_rows[row] = kept
    tables = kept_page_tables(kept_rows, bt, seq_lens, page)
    for layer in ("a", "b"):
        table, used = tables[layer]
        out = torch.full_like(q, float("nan"))
        varlen_paged_attention_reference(q, k_cache, v_cache, out, qsl, max(q_lens), used, max(kv_lens),
                                         32**-0.5, False, table)
        lists = pack_token_lists([kept_rows[0].layers[layer], kept_rows[1].layers[layer], None], "cpu")
        ref = paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, 32**-0.5,
                                        query_pos=torch.tensor(starts), tokens=lists)
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
        assert used[2] == kv_lens[2] and torch.equal(table[2], bt[2])
