"""Sparse-dLLM attention-guided eviction: which cached tokens a layer keeps for a block's steps.

In the selection pass (a full pass, `evict_delay` steps into the block) each layer scores every
cached token j outside the current block by s_j = mean_h(mean_{i in block} q_{h,i}) . k_{h,j}
(post-RoPE; grouped KV heads serve their query heads), max-pools the scores over `kernel_size`
neighbours in the order prefix, suffix (the block removed, as Sparse-dLLM's code concatenates
them), and keeps the top int(n * keep_ratio) of the n cached tokens, shared by all heads. The
block's own positions are always attended (their K/V are recomputed every step).

The result is kept as an ascending list of key positions per layer: the attention kernel's
`TokenLists`. With `evict_unit="page"` whole KV-cache pages are kept instead (the block's pages
always, then the best int(candidates * keep_ratio) of the others by their best pooled token score);
their positions feed the same token-list kernel, and on Hopper the block's later steps run
FlashAttention-3 over a per-layer block table listing only the kept pages (`kept_page_tables`).

Page eviction also frees memory. Every layer keeps as many pages, so right after selecting, each
layer moves its kept pages onto the same pages of the request (`live_pages`: the block's own and the
first others; `compact_kept_pages`), and the rest are dead for all layers: the scheduler returns them
to vLLM's block pool until the next block's refresh (`engine.evicted_pages`). Later steps find a
page's content through the layer's physical page list (`RequestKeptTokens.physical`), in the same
order as before, so the attention is the same, bit for bit.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vllm_dlm.attention.ops.paged_attention import TokenLists


def select_kept_tokens(q_block: torch.Tensor, k: torch.Tensor, block_start: int, keep_ratio: float,
                       kernel_size: int, page_size: int | None = None):
    """q_block [B, Hq, D] the block's queries; k [L, Hkv, D] keys of the whole sequence ->
    kept positions [int((L - B) * keep_ratio) + B] int32, ascending (the block included).
    With `page_size`: (kept positions, kept logical pages) of whole pages, both int32 ascending."""
    num_block, num_heads, head_dim = q_block.shape
    seq_len, num_kv_heads, _ = k.shape
    group = num_heads // num_kv_heads
    mean_q = q_block.float().mean(0).view(num_kv_heads, group, head_dim)
    scores = torch.einsum("kgd,lkd->l", mean_q, k.float()) / num_heads  # mean over query heads
    block_end = block_start + num_block
    cached = torch.cat([scores[:block_start], scores[block_end:]])
    if kernel_size > 1:
        cached = F.max_pool1d(cached[None, None], kernel_size, stride=1, padding=kernel_size // 2)[0, 0]
    if page_size is not None:
        return _kept_pages(cached, seq_len, block_start, block_end, keep_ratio, page_size)
    keep = int(cached.numel() * keep_ratio)
    index = cached.topk(keep).indices
    positions = torch.where(index < block_start, index, index + num_block)
    block = torch.arange(block_start, block_end, device=k.device)
    return torch.cat([positions, block]).sort().values.to(torch.int32)


def _kept_pages(cached: torch.Tensor, seq_len: int, block_start: int, block_end: int, keep_ratio: float,
                page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled scores of the cached tokens (prefix then suffix) -> whole kept pages."""
    device = cached.device
    num_pages = -(-seq_len // page_size)
    scores = torch.full((num_pages * page_size,), -torch.inf, device=device)
    scores[:block_start] = cached[:block_start]
    scores[block_end:seq_len] = cached[block_start:]
    page_scores = scores.view(num_pages, page_size).amax(1)
    first, last = block_start // page_size, (block_end - 1) // page_size
    candidates = torch.cat([torch.arange(first, device=device), torch.arange(last + 1, num_pages, device=device)])
    keep = int(candidates.numel() * keep_ratio)
    # max-pooling makes neighbouring pages tie: a stable sort keeps the lower page first
    order = torch.sort(page_scores[candidates], descending=True, stable=True).indices
    chosen = candidates[order[:keep]]
    pages = torch.cat([chosen, torch.arange(first, last + 1, device=device)]).sort().values
    positions = (pages[:, None] * page_size + torch.arange(page_size, device=device)).flatten()
    return positions[positions < seq_len].to(torch.int32), pages.to(torch.int32)


def live_pages(seq_len: int, block_start: int, block_length: int, keep_ratio: float, page_size: int) -> list[int]:
    """Logical pages a request holds after page eviction (the others are dead for every layer):
    the block's pages and the first int(candidates * keep_ratio) of the others, ascending.
    Shared by the worker (where it compacts) and the scheduler (what it frees)."""
    num_pages = -(-seq_len // page_size)
    first, last = block_start // page_size, (block_start + block_length - 1) // page_size
    keep = int((num_pages - (last - first + 1)) * keep_ratio)
    others = [p for p in range(num_pages) if not first <= p <= last][:keep]
    return sorted(others + list(range(first, last + 1)))


def compact_kept_pages(kv_cache: torch.Tensor, row_pages: torch.Tensor, kept: torch.Tensor,
                       live: torch.Tensor) -> torch.Tensor:
    """One layer: move its kept pages onto the request's live pages. kv_cache [pages, ...] the
    layer's cache; row_pages [n] int the request's physical page of each logical page; kept, live
    int ascending logical pages of equal count (both hold the block's pages). Kept pages that are
    live stay; the others fill the live pages this layer does not keep, in order.
    -> physical page holding each kept page, in kept order."""
    kept, live = kept.long(), live.long()
    num_pages = row_pages.shape[0]
    is_live = torch.zeros(num_pages, dtype=torch.bool, device=kept.device)
    is_live[live] = True
    is_kept = torch.zeros_like(is_live)
    is_kept[kept] = True
    moving = ~is_live[kept]
    sources, targets = kept[moving], live[~is_kept[live]]
    kv_cache[row_pages[targets].long()] = kv_cache[row_pages[sources].long()]
    home = kept.clone()
    home[moving] = targets
    return row_pages[home].to(torch.int32)


@dataclass
class RequestKeptTokens:
    """One request's eviction for its current block: layer name -> kept positions (int32); with
    page eviction also layer name -> kept logical pages (int32) of its `seq_len` keys."""

    block_start: int
    seq_len: int = 0
    layers: dict[str, torch.Tensor] = field(default_factory=dict)
    pages: dict[str, torch.Tensor] = field(default_factory=dict)
    # page eviction: layer name -> physical page holding each kept page (after compaction)
    physical: dict[str, torch.Tensor] = field(default_factory=dict)
    _stacked: tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.layers.values(), *self.pages.values()])

    def stacked_pages(self, page_size: int) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
        """(layer names, kept logical pages [layers, n] int64, the physical page holding each
        [layers, n] int32, keys attended [layers] int32), built once: every layer keeps the same
        number of pages; only whether the last, partial page is among them differs."""
        if self._stacked is None:
            names = list(self.pages)
            pages = torch.stack([self.pages[n] for n in names]).long()
            num_pages = -(-self.seq_len // page_size)
            short = num_pages * page_size - self.seq_len  # empty slots of the last page
            used = pages.shape[1] * page_size - short * (pages[:, -1] == num_pages - 1).int()
            physical = torch.stack([self.physical[n] for n in names])
            self._stacked = (names, pages, physical, used.to(torch.int32))
        return self._stacked


def kept_page_tables(kept_rows: dict[int, RequestKeptTokens], block_table: torch.Tensor,
                     seq_lens: torch.Tensor, page_size: int,
                     max_seq_len: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the batch's (block table, keys attended) for FlashAttention-3's paged varlen call:
    rows in `kept_rows` list only their kept pages (physical ids, in logical order), the others
    are unchanged. Built once per step for all layers, over the pages the step can touch."""
    names = None
    tables = used = None
    block_table = block_table[:, : -(-max_seq_len // page_size)]
    for row, kept in kept_rows.items():
        row_names, _, pages, row_used = kept.stacked_pages(page_size)
        if tables is None:
            names = row_names
            tables = block_table.unsqueeze(0).repeat(len(names), 1, 1)
            used = seq_lens.unsqueeze(0).repeat(len(names), 1)
        tables[:, row, : pages.shape[1]] = pages
        used[:, row] = row_used
    return {name: (tables[i], used[i]) for i, name in enumerate(names or [])}


def remapped_block_tables(kept_rows: dict[int, RequestKeptTokens], block_table: torch.Tensor,
                          page_size: int) -> dict[str, torch.Tensor]:
    """Per layer, the batch's block table with each compacted row's kept logical pages pointing at
    the physical pages now holding them (for kernels that read kept tokens by position). Rows
    without compaction, and pages never read, are unchanged. Built once per step."""
    names, tables = None, None
    for row, kept in kept_rows.items():
        if not kept.physical:
            continue
        row_names, logical, physical, _ = kept.stacked_pages(page_size)
        if tables is None:
            names = row_names
            tables = block_table.unsqueeze(0).repeat(len(names), 1, 1)
        tables[:, row].scatter_(1, logical, physical)
    return {name: tables[i] for i, name in enumerate(names or [])}


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
