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
) -> torch.Tensor:
    """q [T, Hq, D]; request r's queries q[qsl[r]:qsl[r+1]] are its last positions of seq_lens[r]
    and attend to its keys [0, seq_lens[r]) (causal: only keys at or before their position).
    Returns [T, Hq, D] in q's dtype."""
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
        if causal:
            q_pos = torch.arange(kv_len - (qe - qs), kv_len)
            scores = scores.masked_fill(torch.arange(kv_len)[None, :] > q_pos[:, None], float("-inf"))
        out[qs:qe] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).to(q.dtype)
    return out


def write_kv_reference(key, value, k_cache, v_cache, slot_mapping) -> None:
    """Scatter key/value [T, H, D] into the caches at flat slots (negative slot: skip)."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    k_cache.view(-1, *k_cache.shape[2:])[slots] = key[keep].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = value[keep].to(v_cache.dtype)
