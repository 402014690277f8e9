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
    block_mask: torch.Tensor | None = None,
    mask_block: int = 128,
) -> torch.Tensor:
    """q [T, Hq, D]; request r's queries q[qsl[r]:qsl[r+1]] are its last positions of seq_lens[r]
    and attend to its keys [0, seq_lens[r]) (causal: only keys at or before their position;
    block_mask [R, Hq, nQ, nK]: only key blocks kept for the query's block, blocks of mask_block
    positions). Returns [T, Hq, D] in q's dtype."""
    out = torch.zeros_like(q)
    num_heads, num_kv_heads = q.shape[1], k_cache.shape[2]
    for r in range(block_table.shape[0]):
        qs, qe = int(query_start_loc[r]), int(query_start_loc[r + 1])
        if qe == qs:
            continue
        kv_len = int(seq_lens[r])
        k = gather_request_kv(k_cache, block_table[r], kv_len).float()
        v = gather_request_kv(v_cache, block_table[r], kv_len).float()
        k = k.repeat_interleave(num_heads // num_kv_heads, dim=1)
        v = v.repeat_interleave(num_heads // num_kv_heads, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q[qs:qe].float(), k) * scale
        q_pos = torch.arange(kv_len - (qe - qs), kv_len)
        if causal:
            scores = scores.masked_fill(torch.arange(kv_len)[None, :] > q_pos[:, None], float("-inf"))
        if block_mask is not None:
            keep = block_mask[r][:, q_pos // mask_block][:, :, torch.arange(kv_len) // mask_block]
            scores = scores.masked_fill(~keep.bool().cpu(), float("-inf"))
        out[qs:qe] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).to(q.dtype)
    return out


def block_scores_reference(q: torch.Tensor, k: torch.Tensor, block_size: int, scale: float) -> torch.Tensor:
    """Twin of `block_scores.block_scores`: dense softmax over all keys, then per-tile means."""
    seq_len, num_heads, _ = q.shape
    k = k.float().repeat_interleave(num_heads // k.shape[1], dim=1)
    probs = (torch.einsum("qhd,khd->hqk", q.float(), k) * scale).softmax(-1)
    n = -(-seq_len // block_size)
    padded = torch.zeros(num_heads, n * block_size, n * block_size)
    padded[:, :seq_len, :seq_len] = probs
    sums = padded.view(num_heads, n, block_size, n, block_size).sum(dim=(2, 4))
    sizes = torch.full((n,), block_size)
    sizes[-1] = seq_len - (n - 1) * block_size
    return sums / (sizes[:, None] * sizes[None, :])


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
