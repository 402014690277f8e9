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
    pos0, ... and attend to keys [0, seq_len); `lists` = (blocks [L, Hq, nQ, kmax], counts
    [L, Hq, nQ]) of its SparseD masks over blocks of `block_size` positions for a stack of L layers
    (one layer may drop the L dimension), or None (dense)."""

    q_start: int
    q_len: int
    pos0: int
    seq_len: int
    lists: tuple[torch.Tensor, torch.Tensor] | None = None
    block_size: int = 128


@dataclass
class RowGeometry:
    """One row's virtual sequences, in the row's logical pages: page_index [L or 1, Hq, nQt, W]
    (int64), k_len [L or 1, Hq, nQt] int32 (device); q_len [nQt] int32 (host), one entry per
    query block the row's queries touch; max_k: the longest virtual sequence's keys."""

    page_index: torch.Tensor
    k_len: torch.Tensor
    q_len: torch.Tensor
    max_k: int

    @property
    def nbytes(self) -> int:
        return self.page_index.numel() * 8 + self.k_len.numel() * 4


@dataclass
class VirtualSequences:
    """One step's virtual sequences for a stack of L layers: table [L, V, W] int32 (virtual pages
    of the head-split cache), k_len [L, V] int32, cu_q [V + 1] int32 on the device; V = Hq x the
    batch's touched query blocks, head-major."""

    table: torch.Tensor
    k_len: torch.Tensor
    cu_q: torch.Tensor
    max_q: int
    max_k: int


def supports(k_cache: torch.Tensor, page_size: int, block_size: int, causal: bool) -> bool:
    num_pages, _, num_kv_heads, head_dim = k_cache.shape
    hnd = k_cache.stride()[:3] == (num_kv_heads * page_size * 2 * head_dim, 2 * head_dim, page_size * 2 * head_dim)
    return not causal and block_size % page_size == 0 and hnd


def _head_pages(cache: torch.Tensor) -> torch.Tensor:
    """[num_pages, page_size, Hkv, D] view of the HND cache -> [num_pages * Hkv, page_size, 1, D]."""
    num_pages, page_size, num_kv_heads, head_dim = cache.shape
    row = cache.stride(1)
    return cache.as_strided((num_pages * num_kv_heads, page_size, 1, head_dim), (page_size * row, row, row, 1))


def row_geometry(row: RowInfo, page_size: int, num_heads: int, device) -> RowGeometry:
    """A row's virtual sequences before its pages are known: the same for every step in which
    the row has the same positions, keys and masks (a block's dual-cache steps)."""
    n_pages = -(-row.seq_len // page_size)
    if row.lists is None:  # dense: one virtual sequence per head over all its pages
        index = torch.arange(n_pages, device=device).expand(1, num_heads, 1, n_pages)
        k_len = torch.full((1, num_heads, 1), row.seq_len, dtype=torch.int32, device=device)
        return RowGeometry(index, k_len, torch.tensor([row.q_len], dtype=torch.int32), row.seq_len)
    blocks, counts = row.lists
    if blocks.dim() == 3:
        blocks, counts = blocks[None], counts[None]
    block_size = row.block_size
    ppb = block_size // page_size  # pages per SparseD block
    first, last = row.pos0 // block_size, (row.pos0 + row.q_len - 1) // block_size
    blocks, counts = blocks[:, :, first : last + 1], counts[:, :, first : last + 1]  # touched q blocks
    num_kb = -(-row.seq_len // block_size)
    ids = blocks.long().clamp(max=num_kb - 1)
    index = (ids[..., None] * ppb + torch.arange(ppb, device=device)).flatten(-2).clamp(max=n_pages - 1)
    # A kept last key block holds only the keys up to seq_len (it is the list's last entry).
    last_len = row.seq_len - (num_kb - 1) * block_size
    kept_last = ids.gather(-1, (counts.long() - 1).clamp(min=0)[..., None])[..., 0] == num_kb - 1
    k_len = (counts * block_size - kept_last.int() * (block_size - last_len)).int()
    qb = torch.arange(first, last + 1)
    lo = torch.clamp(qb * block_size, min=row.pos0)
    hi = torch.clamp((qb + 1) * block_size, max=row.pos0 + row.q_len)
    return RowGeometry(index, k_len, (hi - lo).int(), blocks.shape[-1] * block_size)


def build_virtual_sequences(rows: list[RowInfo], geometry: list[RowGeometry | None], block_table,
                            num_kv_heads: int, num_heads: int) -> VirtualSequences:
    """The batch's virtual sequences for every layer of the rows' geometry (rows with q_len 0 have
    None): each row's logical pages mapped through its block table, then concatenated in the
    head-major order (head, row, query block) of the [Hq, T, D] query layout. No host-device sync."""
    device = block_table.device
    kv_head = (torch.arange(num_heads, device=device) // (num_heads // num_kv_heads)).to(block_table.dtype)
    num_layers = max(g.page_index.shape[0] for g in geometry if g is not None)
    width = max(g.page_index.shape[-1] for g in geometry if g is not None)
    tables, k_lens, q_lens = [], [], []
    for r, g in enumerate(geometry):
        if g is None:
            continue
        table = block_table[r][g.page_index] * num_kv_heads + kv_head[:, None, None]
        table = torch.nn.functional.pad(table, (0, width - table.shape[-1]))
        tables.append(table.expand(num_layers, -1, -1, -1))
        k_lens.append(g.k_len.expand(num_layers, -1, -1))
        q_lens.append(g.q_len)
    table = torch.cat(tables, dim=2).flatten(1, 2).to(torch.int32)  # [L, Hq * blocks, W]
    k_len = torch.cat(k_lens, dim=2).flatten(1, 2)
    q_len = torch.cat(q_lens).repeat(num_heads)
    cu_q = torch.zeros(q_len.numel() + 1, dtype=torch.int32)
    cu_q[1:] = q_len.cumsum(0)
    max_k = max(g.max_k for g in geometry if g is not None)
    return VirtualSequences(table, k_len, cu_q.to(device, non_blocking=True), int(q_len.max()), max_k)


def varlen_attention(q, k_cache, v_cache, out, seqs: VirtualSequences, layer: int, scale: float,
                     varlen_fn, return_lse: bool = False) -> torch.Tensor | None:
    """One layer over the step's virtual sequences. q/out [T, Hq, D]; k_cache/v_cache [num_pages,
    page_size, Hkv, D] (HND views); `varlen_fn` is FA3's flash_attn_varlen_func (or its torch twin).
    Returns the log-sum-exp [T, Hq] of every query's scaled scores if `return_lse`."""
    num_tokens, num_heads, head_dim = q.shape
    q_heads = q.transpose(0, 1).contiguous().view(num_heads * num_tokens, 1, head_dim)
    out_heads = torch.empty_like(q_heads)
    result = varlen_fn(q=q_heads, k=_head_pages(k_cache), v=_head_pages(v_cache), out=out_heads,
                       cu_seqlens_q=seqs.cu_q, max_seqlen_q=seqs.max_q, seqused_k=seqs.k_len[layer],
                       max_seqlen_k=seqs.max_k, softmax_scale=scale, causal=False,
                       block_table=seqs.table[layer], return_softmax_lse=return_lse)
    out.copy_(out_heads.view(num_heads, num_tokens, head_dim).transpose(0, 1))
    if return_lse:  # [1, Hq * T] in the head-major layout -> [T, Hq] view
        return result[1].view(num_heads, num_tokens).t()
    return None


def sparse_varlen_attention(q, k_cache, v_cache, out, block_table, rows: list[RowInfo], scale: float,
                            varlen_fn, return_lse: bool = False) -> torch.Tensor | None:
    """One layer, its virtual sequences built for this call (rows' lists of that layer); rows:
    every batch row in order, their tokens covering [0, T). The engine builds them once per step
    for all layers instead (`sparsity.plan.StepSparsity.virtual_sequences`)."""
    page_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    geometry = [row_geometry(row, page_size, q.shape[1], q.device) if row.q_len else None for row in rows]
    seqs = build_virtual_sequences(rows, geometry, block_table, num_kv_heads, q.shape[1])
    return varlen_attention(q, k_cache, v_cache, out, seqs, 0, scale, varlen_fn, return_lse)
