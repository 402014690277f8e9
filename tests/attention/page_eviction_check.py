"""Page eviction's FA3 path against the token-list kernel over the same kept positions, on a
random packed batch; shared by the CPU test (torch twins) and the GPU benchmark check (FA3 vs our
Triton kernel, benchmarks/bench_eviction.py)."""

import torch

from vllm_dlm.attention.impl import split_kv_cache
from vllm_dlm.attention.sparsity.eviction import (RequestKeptTokens, kept_page_tables, pack_token_lists,
                                                  select_kept_tokens)


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
    """Rows 0 .. n-2 keep half their pages (per layer), the last row none. `varlen_fn` is FA3's
    flash_attn_varlen_func or its twin; `token_list_attention(q, k_cache, v_cache, block_table,
    qsl, seq_lens, query_pos, tokens, max_query_len, scale)` the token-list kernel or its twin.
    Returns the max |difference| over layers; asserts the un-evicted row's table is unchanged."""
    q, kv, bt, qsl, seq_lens = packed_batch(q_lens, kv_lens, num_heads, num_kv_heads, head_dim, page_size,
                                            g, device, dtype)
    k_cache, v_cache = split_kv_cache(kv, head_dim)
    scale = head_dim**-0.5
    kept_rows = {}
    for row in range(len(q_lens) - 1):
        kept = kept_rows[row] = RequestKeptTokens(starts[row], kv_lens[row])
        for layer in layers:
            keys = k_cache[bt[row, : -(-kv_lens[row] // page_size)].long()].flatten(0, 1)[: kv_lens[row]]
            block_q = torch.randn(q_lens[row], num_heads, head_dim, generator=g, device=device, dtype=dtype)
            kept.layers[layer], kept.pages[layer] = select_kept_tokens(block_q, keys, starts[row], 0.5, 3, page_size)
    tables = kept_page_tables(kept_rows, bt, seq_lens, page_size, max(kv_lens))
    query_pos = torch.tensor(starts, dtype=torch.int32, device=device)
    error = 0.0
    for layer in layers:
        table, used = tables[layer]
        last = len(q_lens) - 1
        assert int(used[last]) == kv_lens[last] and torch.equal(table[last], bt[last, : table.shape[1]])
        out = torch.full_like(q, float("nan"))
        varlen_fn(q=q, k=k_cache, v=v_cache, out=out, cu_seqlens_q=qsl, max_seqlen_q=max(q_lens),
                  seqused_k=used, max_seqlen_k=max(kv_lens), softmax_scale=scale, causal=False,
                  block_table=table)
        lists = pack_token_lists([kept_rows[r].layers[layer] for r in range(last)] + [None], device)
        ref = token_list_attention(q, k_cache, v_cache, bt, qsl, seq_lens, query_pos, lists, max(q_lens), scale)
        error = max(error, float((out.float() - ref.float()).abs().max()))
    return error
