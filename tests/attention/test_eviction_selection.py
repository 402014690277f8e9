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
    from tests.attention.page_eviction_check import page_tables_vs_token_lists
    from vllm_dlm.attention.ops.reference import paged_attention_reference, varlen_paged_attention_reference

    def token_lists(q, k_cache, v_cache, bt, qsl, seq_lens, query_pos, tokens, max_query_len, scale):
        return paged_attention_reference(q, k_cache, v_cache, bt, qsl, seq_lens, scale,
                                         query_pos=query_pos, tokens=tokens)

    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    error = page_tables_vs_token_lists(varlen_paged_attention_reference, token_lists, [16, 16, 9],
                                       [100, 70, 40], [48, 16, 31], num_heads=4, num_kv_heads=2,
                                       head_dim=32, g=g)
    assert error < 2e-5


@pytest.mark.parametrize("seq_len, block_start, block_len, page, keep", [
    (97, 40, 16, 16, 0.5), (130, 0, 32, 16, 0.3), (61, 45, 16, 8, 0.7), (50, 17, 16, 16, 0.5), (200, 184, 16, 16, 0.4),
])
def test_compaction_puts_every_kept_page_on_a_live_page(seq_len, block_start, block_len, page, keep):
    """Each layer's kept pages land on the request's live pages (the same set for every layer,
    the block's pages unmoved), content intact; pages outside it are left alone."""
    from vllm_dlm.attention.sparsity.eviction import compact_kept_pages, live_pages

    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    num_pages = -(-seq_len // page)
    live = live_pages(seq_len, block_start, block_len, keep, page)
    block = list(range(block_start // page, (block_start + block_len - 1) // page + 1))
    assert set(block) <= set(live) and live == sorted(set(live))
    row_pages = torch.randperm(num_pages + 5, generator=g)[:num_pages]
    for _ in range(3):  # layers with different kept pages
        q = torch.randn(seq_len, 4, 32, generator=g)
        k = torch.randn(seq_len, 2, 32, generator=g)
        _, kept = select_kept_tokens(q[block_start : block_start + block_len], k, block_start, keep, 3, page_size=page)
        assert kept.numel() == len(live)
        cache = torch.randn(num_pages + 5, 2, page, 8, generator=g)
        original = cache.clone()
        physical = compact_kept_pages(cache, row_pages, kept, torch.tensor(live))
        assert sorted(physical.tolist()) == sorted(row_pages[live].tolist())
        for logical, where in zip(kept.tolist(), physical.tolist()):
            assert torch.equal(cache[where], original[row_pages[logical]])
            if logical in live:
                assert where == row_pages[logical], "a kept page that is live stays where it is"
        others = [p for p in range(num_pages + 5) if p not in row_pages[live].tolist()]
        assert torch.equal(cache[others], original[others])
