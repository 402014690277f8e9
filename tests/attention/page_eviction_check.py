"""Page eviction's FA3 path, and the token-list kernel after compaction, against the token-list
kernel over the same kept positions before compaction, on a random packed batch; shared by the CPU test (torch twins) and the GPU benchmark check (FA3 vs our
Triton kernel, benchmarks/bench_eviction.py)."""

import torch

from vllm_dlm.attention.impl import split_kv_cache
from vllm_dlm.attention.sparsity.eviction import (
    RequestKeptTokens,
    compact_kept_pages,
    kept_page_tables,
    live_pages,
    pack_token_lists,
    remapped_block_tables,
    select_kept_tokens,
)


def packed_batch(q_lens, kv_lens, num_heads, num_kv_heads, head_dim, page_size, g,
                 device="cpu", dtype=torch.float32):
    """vLLM's packed HND cache [pages, Hkv, page, 2D] with each request's pages scattered ->
    (q, kv, block_table, query_start_loc, seq_lens)."""
    pages_per = [-(-n // page_size) for n in kv_lens]
    total = sum(pages_per) + 2
    perm = torch.randperm(total, generator=g, device=device)
    block_table = torch.zeros(len(q_lens), max(pages_per), dtype=torch.int32, device=device)
    used = 0
    for r, n in enumerate(pages_per):
        block_table[r, :n] = perm[used : used + n].int()
        used += n
    kv = torch.randn(total, num_kv_heads, page_size, 2 * head_dim, generator=g, device=device, dtype=dtype)
    q = torch.randn(sum(q_lens), num_heads, head_dim, generator=g, device=device, dtype=dtype)
    qsl = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32, device=device)
    return q, kv, block_table, qsl, torch.tensor(kv_lens, dtype=torch.int32, device=device)


def page_tables_vs_token_lists(varlen_fn, token_list_attention, q_lens, kv_lens, starts, *, num_heads,
                               num_kv_heads, head_dim, page_size=16, layers=("a", "b"), g=None,
                               device="cpu", dtype=torch.float32) -> float:
    """Rows 0 .. n-2 keep half their pages (per layer, each layer with its own cache), the last row
    none. The kept pages are then compacted onto the live pages and the dead pages overwritten
    with garbage. `varlen_fn` (FA3's flash_attn_varlen_func or its twin) over the per-layer kept
    page tables, and `token_list_attention(q, k_cache, v_cache, block_table, qsl, seq_lens,
    query_pos, tokens, max_query_len, scale)` (the token-list kernel or its twin) over the
    remapped block tables, both on the compacted caches, are compared with the token-list kernel
    on the caches as they were. Returns the max |difference|; asserts the un-evicted row's tables
    are unchanged."""
    q, kv, bt, qsl, seq_lens = packed_batch(q_lens, kv_lens, num_heads, num_kv_heads, head_dim, page_size,
                                            g, device, dtype)
    scale = head_dim**-0.5
    before = {layer: kv.clone() for layer in layers}
    after = {layer: kv.clone() for layer in layers}
    kept_rows = {}
    for row in range(len(q_lens) - 1):
        kept = kept_rows[row] = RequestKeptTokens(starts[row], kv_lens[row])
        row_pages = bt[row, : -(-kv_lens[row] // page_size)]
        live = live_pages(kv_lens[row], starts[row], q_lens[row], 0.5, page_size)
        for layer in layers:
            keys = split_kv_cache(before[layer], head_dim)[0][row_pages.long()].flatten(0, 1)[: kv_lens[row]]
            block_q = torch.randn(q_lens[row], num_heads, head_dim, generator=g, device=device, dtype=dtype)
            kept.layers[layer], kept.pages[layer] = select_kept_tokens(block_q, keys, starts[row], 0.5, 3, page_size)
            kept.physical[layer] = compact_kept_pages(after[layer], row_pages, kept.pages[layer],
                                                      torch.tensor(live, device=device))
        dead = [p for p in range(row_pages.numel()) if p not in live]
        assert dead, "the check needs pages that no layer keeps"
        for layer in layers:  # whatever reads a dead page now gets garbage
            garbage = 1e3 * torch.randn(after[layer][row_pages[dead].long()].shape, generator=g, device=device)
            after[layer][row_pages[dead].long()] = garbage.to(dtype)
    tables = kept_page_tables(kept_rows, bt, seq_lens, page_size, max(kv_lens))
    remapped = remapped_block_tables(kept_rows, bt, page_size)
    query_pos = torch.tensor(starts, dtype=torch.int32, device=device)
    last = len(q_lens) - 1
    error = 0.0
    for layer in layers:
        table, used = tables[layer]
        assert int(used[last]) == kv_lens[last] and torch.equal(table[last], bt[last, : table.shape[1]])
        assert torch.equal(remapped[layer][last], bt[last])
        lists = pack_token_lists([kept_rows[r].layers[layer] for r in range(last)] + [None], device)
        ref = token_list_attention(q, *split_kv_cache(before[layer], head_dim), bt, qsl, seq_lens, query_pos,
                                   lists, max(q_lens), scale)
        k_cache, v_cache = split_kv_cache(after[layer], head_dim)
        out = torch.full_like(q, float("nan"))
        varlen_fn(q=q, k=k_cache, v=v_cache, out=out, cu_seqlens_q=qsl, max_seqlen_q=max(q_lens),
                  seqused_k=used, max_seqlen_k=max(kv_lens), softmax_scale=scale, causal=False,
                  block_table=table)
        moved = token_list_attention(q, k_cache, v_cache, remapped[layer], qsl, seq_lens, query_pos, lists,
                                     max(q_lens), scale)
        for got in (out, moved):
            error = max(error, float((got.float() - ref.float()).abs().max()))
    return error
