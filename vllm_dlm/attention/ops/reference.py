"""Plain-torch twins of the paged attention kernels (the definition the Triton kernels are tested
against). Loops over requests; float32 math."""

import torch


def gather_request_kv(cache: torch.Tensor, block_table_row: torch.Tensor, kv_len: int) -> torch.Tensor:
    """[num_pages, page_size, H, D] + the request's page ids -> its first kv_len rows [kv_len, H, D]."""
    page_size = cache.shape[1]
    num_pages = -(-kv_len // page_size)
    pages = cache[block_table_row[:num_pages].long()]
    return pages.reshape(-1, *cache.shape[2:])[:kv_len]


def paged_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    causal: bool = False,
    query_pos: torch.Tensor | None = None,
    blocks=None,
    tokens=None,
    lse: torch.Tensor | None = None,
) -> torch.Tensor:
    """Twin of `paged_attention.paged_attention` (same arguments). Request r's queries
    q[qsl[r]:qsl[r+1]] sit at positions query_pos[r], +1, ... (default: its last positions) and
    attend to its keys [0, seq_lens[r]), restricted to its kept key blocks (`blocks`, per head and
    query block) or kept key positions (`tokens`), and with `causal` to keys at or before the
    query. Returns [T, Hq, D] in q's dtype; fills `lse` [T, Hq] if given."""
    out = torch.zeros_like(q)
    num_heads, num_kv_heads = q.shape[1], k_cache.shape[2]
    for r in range(block_table.shape[0]):
        qs, qe = int(query_start_loc[r]), int(query_start_loc[r + 1])
        if qe == qs:
            continue
        kv_len = int(seq_lens[r])
        pos0 = kv_len - (qe - qs) if query_pos is None else int(query_pos[r])
        k = gather_request_kv(k_cache, block_table[r], kv_len).float()
        v = gather_request_kv(v_cache, block_table[r], kv_len).float()
        k = k.repeat_interleave(num_heads // num_kv_heads, dim=1)
        v = v.repeat_interleave(num_heads // num_kv_heads, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q[qs:qe].float(), k) * scale
        q_pos = torch.arange(pos0, pos0 + qe - qs)
        key_pos = torch.arange(kv_len)
        keep = torch.ones(num_heads, qe - qs, kv_len, dtype=torch.bool)
        if causal:
            keep &= key_pos[None, None, :] <= q_pos[None, :, None]
        if blocks is not None and int(blocks.meta[r, 0]) >= 0:
            bs = blocks.block_size
            block_keep = _request_block_mask(blocks, r, num_heads, -(-kv_len // bs)).cpu()
            keep &= block_keep[:, q_pos // bs][:, :, key_pos // bs]
        if tokens is not None and int(tokens.meta[r, 0]) >= 0:
            offset, count = (int(x) for x in tokens.meta[r])
            kept = torch.zeros(kv_len, dtype=torch.bool)
            kept[tokens.tokens[offset : offset + count].long().cpu()] = True
            keep &= kept[None, None, :]
            if tokens.bits is not None and int(tokens.bits_meta[r, 0]) >= 0:
                b_off, qb0, rows, nkb = (int(x) for x in tokens.bits_meta[r])
                bits = tokens.bits[b_off : b_off + num_heads * rows * nkb].view(num_heads, rows, nkb).bool().cpu()
                bbs = tokens.bits_block_size
                keep &= bits[:, q_pos // bbs - qb0][:, :, key_pos // bbs]
        scores = scores.masked_fill(~keep, float("-inf"))
        out[qs:qe] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).to(q.dtype)
        if lse is not None:
            lse[qs:qe] = scores.logsumexp(-1).transpose(0, 1).to(lse.dtype)
    return out


def _request_block_mask(blocks, r: int, num_heads: int, num_key_blocks: int) -> torch.Tensor:
    """Request r's part of `BlockLists` -> keep mask [Hq, nQ, num_key_blocks]."""
    from vllm_dlm.attention.sparsity.sparsed import lists_to_mask

    b_off, c_off, nq, kmax = (int(x) for x in blocks.meta[r])
    counts = blocks.counts[c_off : c_off + num_heads * nq].view(num_heads, nq)
    lists = blocks.blocks[b_off : b_off + num_heads * nq * kmax].view(num_heads, nq, kmax)
    return lists_to_mask(lists, counts, num_key_blocks)


def block_scores_reference(q: torch.Tensor, k: torch.Tensor, block_size: int, scale: float,
                           key_start_block: int = 0) -> torch.Tensor:
    """Twin of `block_scores.block_scores`: dense softmax over the keys from key_start_block on,
    zero-padded to whole tiles, then per-tile means."""
    seq_len, num_heads, _ = q.shape
    k = k.float().repeat_interleave(num_heads // k.shape[1], dim=1)[key_start_block * block_size :]
    probs = (torch.einsum("qhd,khd->hqk", q.float(), k) * scale).softmax(-1)
    nq, nk = -(-seq_len // block_size), -(-k.shape[0] // block_size)
    padded = torch.zeros(num_heads, nq * block_size, nk * block_size)
    padded[:, :seq_len, : k.shape[0]] = probs
    return padded.view(num_heads, nq, block_size, nk, block_size).mean(dim=(2, 4))


def write_kv_reference(key, value, k_cache, v_cache, slot_mapping) -> None:
    """Scatter key/value [T, H, D] into the caches at flat slots (negative slot: skip)."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    k_cache.view(-1, *k_cache.shape[2:])[slots] = key[keep].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = value[keep].to(v_cache.dtype)


def random_paged_batch(q_lens, kv_lens, num_heads, num_kv_heads, head_dim, page_size, dtype, device="cpu"):
    """Fresh random test data: (q, k_cache, v_cache, block_table, query_start_loc, seq_lens), each
    request's pages scattered through a pool with spares (kv_lens[r] >= q_lens[r])."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    num_pages_per_req = [-(-n // page_size) for n in kv_lens]
    total_pages = sum(num_pages_per_req) + 3
    perm = torch.randperm(total_pages, generator=g)  # pages scattered through the pool
    block_table = torch.zeros(len(q_lens), max(num_pages_per_req), dtype=torch.int32)
    used = 0
    for r, n in enumerate(num_pages_per_req):
        block_table[r, :n] = perm[used : used + n].int()
        used += n
    k_cache = torch.randn(total_pages, page_size, num_kv_heads, head_dim, generator=g).to(dtype)
    v_cache = torch.randn(total_pages, page_size, num_kv_heads, head_dim, generator=g).to(dtype)
    q = torch.randn(sum(q_lens), num_heads, head_dim, generator=g).to(dtype)
    qsl = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    seq_lens = torch.tensor(kv_lens, dtype=torch.int32)
    return [t.to(device) for t in (q, k_cache, v_cache, block_table, qsl, seq_lens)]


def varlen_paged_attention_reference(q, k, v, out, cu_seqlens_q, max_seqlen_q, seqused_k, max_seqlen_k,
                                     softmax_scale, causal, block_table, return_softmax_lse=False):
    """Torch twin of FlashAttention's flash_attn_varlen_func with a paged cache (non-causal):
    sequence i's queries q[cu[i]:cu[i+1]] attend to its first seqused_k[i] keys, stored in pages
    block_table[i] of k/v [num_pages, page_size, Hkv, D]. Writes out; returns it, or (out,
    lse [H, total_q]) with return_softmax_lse."""
    assert not causal
    page_size = k.shape[1]
    lse = torch.zeros(q.shape[1], q.shape[0])
    for i in range(cu_seqlens_q.numel() - 1):
        qs, qe, n = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1]), int(seqused_k[i])
        if qe == qs:
            continue
        keys = gather_request_kv(k, block_table[i], n).float()
        values = gather_request_kv(v, block_table[i], n).float()
        rep = q.shape[1] // keys.shape[1]
        keys, values = keys.repeat_interleave(rep, 1), values.repeat_interleave(rep, 1)
        scores = torch.einsum("qhd,khd->hqk", q[qs:qe].float(), keys) * softmax_scale
        out[qs:qe] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), values).to(out.dtype)
        lse[:, qs:qe] = scores.logsumexp(-1)
    del page_size, max_seqlen_q, max_seqlen_k
    return (out, lse) if return_softmax_lse else out
