"""SparseD block lists executed by FlashAttention-3 (Hopper), at FA3's efficiency on the kept blocks.

Every (head, request, query block) becomes a one-head varlen "virtual sequence": its queries are
the block's rows of that head, its keys the pages of the head's kept key blocks, listed in its own
block table. vLLM's packed cache [num_pages, Hkv, page_size, 2*D] (HND) lets a page of one KV head
be addressed alone: (page, kv head) is virtual page page * Hkv + kv_head of a cache viewed as
[num_pages * Hkv, page_size, 1, D]. Rows without masks become one virtual sequence per head over
all their pages (dense). One FA3 call then computes the whole batch; queries are laid out head-major
([Hq, T, D]) so that every virtual sequence's rows are contiguous.

Needs: non-causal attention, SparseD blocks that are whole pages (block_size % page_size == 0) and
the HND cache layout. Twin: `reference.paged_attention_reference` with the same `BlockLists`; on
CPU the virtual-sequence construction is tested with `reference.varlen_paged_attention_reference`
standing in for FA3.
"""

from dataclasses import dataclass

import torch


@dataclass
class RowInfo:
    """Host-side shape of one batch row: its tokens [q_start, q_start + q_len) sit at positions
    pos0, ... and attend to keys [0, seq_len); `lists` = (blocks [Hq, nQ, kmax], counts [Hq, nQ])
    of its SparseD masks over blocks of `block_size` positions, or None (dense)."""

    q_start: int
    q_len: int
    pos0: int
    seq_len: int
    lists: tuple[torch.Tensor, torch.Tensor] | None = None
    block_size: int = 128


def supports(k_cache: torch.Tensor, page_size: int, block_size: int, causal: bool) -> bool:
    num_pages, _, num_kv_heads, head_dim = k_cache.shape
    hnd = k_cache.stride()[:3] == (num_kv_heads * page_size * 2 * head_dim, 2 * head_dim, page_size * 2 * head_dim)
    return not causal and block_size % page_size == 0 and hnd


def _head_pages(cache: torch.Tensor) -> torch.Tensor:
    """[num_pages, page_size, Hkv, D] view of the HND cache -> [num_pages * Hkv, page_size, 1, D]."""
    num_pages, page_size, num_kv_heads, head_dim = cache.shape
    row = cache.stride(1)
    return cache.as_strided((num_pages * num_kv_heads, page_size, 1, head_dim), (page_size * row, row, row, 1))


def sparse_varlen_attention(q, k_cache, v_cache, out, block_table, rows: list[RowInfo], scale: float,
                            varlen_fn, return_lse: bool = False) -> torch.Tensor | None:
    """q/out [T, Hq, D]; k_cache/v_cache [num_pages, page_size, Hkv, D] (HND views); block_table
    [R, max_pages]; rows: every batch row in order, their tokens covering [0, T); `varlen_fn` is
    FA3's flash_attn_varlen_func (or its torch twin). No host-device synchronization. Returns the
    log-sum-exp [T, Hq] of every query's scaled scores if `return_lse`."""
    num_tokens, num_heads, head_dim = q.shape
    page_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    device = q.device
    kv_head = (torch.arange(num_heads, device=device) // (num_heads // num_kv_heads)).to(block_table.dtype)

    q_lens, k_lens, tables, max_k = [], [], [], 0
    for r, row in enumerate(rows):
        if row.q_len == 0:
            continue
        pages = block_table[r]
        if row.lists is None:  # dense: one virtual sequence per head over all its pages
            n_pages = -(-row.seq_len // page_size)
            tables.append((pages[:n_pages] * num_kv_heads)[None, None, :] + kv_head[:, None, None])
            q_lens.append(torch.tensor([row.q_len], dtype=torch.int32))
            k_lens.append(torch.full((num_heads, 1), row.seq_len, dtype=torch.int32, device=device))
            max_k = max(max_k, row.seq_len)
            continue
        blocks, counts = row.lists
        block_size = row.block_size
        ppb = block_size // page_size  # pages per SparseD block
        first, last = row.pos0 // block_size, (row.pos0 + row.q_len - 1) // block_size
        blocks, counts = blocks[:, first : last + 1], counts[:, first : last + 1]  # touched q blocks
        num_kb = -(-row.seq_len // block_size)
        ids = blocks.long().clamp(max=num_kb - 1)
        page_idx = (ids[..., None] * ppb + torch.arange(ppb, device=device)).flatten(-2)
        page_idx = page_idx.clamp(max=pages.shape[0] - 1)
        tables.append(pages[page_idx] * num_kv_heads + kv_head[:, None, None])  # [Hq, nQt, kmax*ppb]
        last_len = row.seq_len - (num_kb - 1) * block_size
        kept_last = ids.gather(-1, (counts.long() - 1).clamp(min=0)[..., None])[..., 0] == num_kb - 1
        k_lens.append((counts * block_size - kept_last.int() * (block_size - last_len)).int())
        qb = torch.arange(first, last + 1)
        lo = torch.clamp(qb * block_size, min=row.pos0)
        hi = torch.clamp((qb + 1) * block_size, max=row.pos0 + row.q_len)
        q_lens.append((hi - lo).int())
        max_k = max(max_k, blocks.shape[-1] * block_size)
    # Head-major order (head, row, q block) matches the [Hq, T, D] query layout.
    width = max(t.shape[-1] for t in tables)
    table = torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[-1])) for t in tables], dim=1)
    table = table.flatten(0, 1).to(torch.int32)
    k_len = torch.cat(k_lens, dim=1).flatten()
    q_len = torch.cat(q_lens).repeat(num_heads)
    cu_q = torch.zeros(q_len.numel() + 1, dtype=torch.int32)
    cu_q[1:] = q_len.cumsum(0)
    q_heads = q.transpose(0, 1).contiguous().view(num_heads * num_tokens, 1, head_dim)
    out_heads = torch.empty_like(q_heads)
    result = varlen_fn(q=q_heads, k=_head_pages(k_cache), v=_head_pages(v_cache), out=out_heads,
                       cu_seqlens_q=cu_q.to(device, non_blocking=True), max_seqlen_q=int(q_len.max()),
                       seqused_k=k_len, max_seqlen_k=max_k, softmax_scale=scale, causal=False,
                       block_table=table, return_softmax_lse=return_lse)
    out.copy_(out_heads.view(num_heads, num_tokens, head_dim).transpose(0, 1))
    if return_lse:  # [1, Hq * T] in the head-major layout -> [T, Hq] view
        return result[1].view(num_heads, num_tokens).t()
    return None
