"""Sparse-dLLM attention-guided eviction: which cached tokens a layer keeps for a block's steps.

In the selection pass (a full pass, `evict_delay` steps into the block) each layer scores every
cached token j outside the current block by s_j = mean_h(mean_{i in block} q_{h,i}) . k_{h,j}
(post-RoPE; grouped KV heads serve their query heads), max-pools the scores over `kernel_size`
neighbours in the order prefix, suffix (the block removed, as Sparse-dLLM's code concatenates
them), and keeps the top int(n * keep_ratio) of the n cached tokens, shared by all heads. The
block's own positions are always attended (their K/V are recomputed every step).

The result is kept as an ascending list of key positions per layer: the attention kernel's
`TokenLists`.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vllm_dlm.attention.ops.paged_attention import TokenLists


def select_kept_tokens(q_block: torch.Tensor, k: torch.Tensor, block_start: int, keep_ratio: float,
                       kernel_size: int) -> torch.Tensor:
    """q_block [B, Hq, D] the block's queries; k [L, Hkv, D] keys of the whole sequence ->
    kept positions [int((L - B) * keep_ratio) + B] int32, ascending (the block included)."""
    num_block, num_heads, head_dim = q_block.shape
    seq_len, num_kv_heads, _ = k.shape
    group = num_heads // num_kv_heads
    mean_q = q_block.float().mean(0).view(num_kv_heads, group, head_dim)
    scores = torch.einsum("kgd,lkd->l", mean_q, k.float()) / num_heads  # mean over query heads
    block_end = block_start + num_block
    cached = torch.cat([scores[:block_start], scores[block_end:]])
    if kernel_size > 1:
        cached = F.max_pool1d(cached[None, None], kernel_size, stride=1, padding=kernel_size // 2)[0, 0]
    keep = int(cached.numel() * keep_ratio)
    index = cached.topk(keep).indices
    positions = torch.where(index < block_start, index, index + num_block)
    block = torch.arange(block_start, block_end, device=k.device)
    return torch.cat([positions, block]).sort().values.to(torch.int32)


@dataclass
class RequestKeptTokens:
    """One request's eviction for its current block: layer name -> kept positions (int32)."""

    block_start: int
    layers: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.layers.values())


def pack_token_lists(rows: list[torch.Tensor | None], device, meta: torch.Tensor | None = None) -> TokenLists:
    """One layer's kept positions of every request in a batch (None: attends to all its keys; at
    least one is not) -> `TokenLists`. `meta` may be passed when built for another layer."""
    offsets, tokens, offset = [], [], 0
    for row in rows:
        if row is None:
            offsets.append((-1, 0))
            continue
        offsets.append((offset, row.numel()))
        tokens.append(row)
        offset += row.numel()
    if meta is None:
        meta = torch.tensor(offsets, dtype=torch.int64).to(device, non_blocking=True)
    return TokenLists(tokens[0] if len(tokens) == 1 else torch.cat(tokens), meta)
