"""Plain-torch Sparse-dLLM reference (OpenMOSS/Sparse-dLLM's LLaDA generate and CustomCache,
re-implemented from their description), greedy, low_confidence, batch size 1.

Per block: steps 0 .. evict_delay are full passes over the whole sequence (full attention); the
last of them also caches every layer's post-RoPE K/V of the prefix and suffix (the block removed)
and keeps, per layer, the int(n * keep_ratio) tokens with the highest importance: the block's mean
query against each cached key, averaged over heads, max-pooled over `kernel_size` neighbours
(stride 1). The block's later steps run the block alone against the kept K/V plus its own fresh
K/V. `model` is a LLaDA reference (or SparseDModel: SparseD masks then apply on top).
vllm-dlm's two variants (`evict_pass="cached"`, `page_size`) are described at `sparse_dllm_generate`.
"""

import torch
import torch.nn.functional as F

from tests.reference.llada import get_num_transfer_tokens


def kept_positions(q_block, k, block_start: int, keep_ratio: float, kernel_size: int,
                   page_size: int | None = None) -> torch.Tensor:
    """q_block [H, B, D] the block's queries, k [Hkv, L, D] all keys -> kept positions outside the
    block (in importance order). With `page_size` (vllm-dlm's page eviction): whole pages, ranked
    by their best pooled score, the block's pages kept, positions ascending."""
    num_heads, block_len, _ = q_block.shape
    cached = torch.cat([k[:, :block_start], k[:, block_start + block_len :]], dim=1)
    cached = cached.repeat_interleave(num_heads // k.shape[0], dim=0)
    avg_q = q_block.mean(dim=1)  # [H, D]
    importance = (avg_q[:, None, :] @ cached.transpose(1, 2)).squeeze(1).mean(dim=0)  # [n]
    if kernel_size > 1:
        importance = F.max_pool1d(importance[None, None], kernel_size=kernel_size, stride=1,
                                  padding=kernel_size // 2)[0, 0]
    if page_size is not None:
        return _kept_page_positions(importance, k.shape[1], block_start, block_len, keep_ratio, page_size)
    index = importance.topk(int(importance.numel() * keep_ratio)).indices
    return torch.where(index < block_start, index, index + block_len)


def _kept_page_positions(importance, seq_len, block_start, block_len, keep_ratio, page_size):
    block_pages = set(range(block_start // page_size, (block_start + block_len - 1) // page_size + 1))
    best = {}
    for i, score in enumerate(importance.tolist()):
        pos = i if i < block_start else i + block_len
        page = pos // page_size
        if page not in block_pages:
            best[page] = max(best.get(page, -float("inf")), score)
    ranked = sorted(best, key=lambda page: -best[page])  # stable: ties keep the lower page first
    pages = set(ranked[: int(len(ranked) * keep_ratio)]) | block_pages
    block = range(block_start, block_start + block_len)
    return torch.tensor([p for p in range(seq_len) if p // page_size in pages and p not in block], dtype=torch.long)


@torch.no_grad()
def sparse_dllm_generate(model, prompt, *, steps, gen_length, block_length, mask_id,
                         keep_ratio=0.5, kernel_size=3, evict_delay=1, evict_pass="full",
                         page_size=None) -> torch.Tensor:
    """evict_pass="cached" (vllm-dlm's variant): only step 0 of a block is a full pass; steps
    1 .. evict_delay run the block against step 0's K/V (dual cache), the last of them scoring its
    queries against those keys. page_size: keep whole pages (`kept_positions`)."""
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    steps_per_block = steps // (gen_length // block_length)
    for b in range(gen_length // block_length):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        num_transfer = get_num_transfer_tokens(x[:, lo:hi] == mask_id, steps_per_block)[0]
        kept = None
        for i in range(steps_per_block):
            if i == 0 or (evict_pass == "full" and i <= evict_delay):
                logits, kv, queries = model.net(x, return_queries=True)
                logits = logits[:, lo:hi]
                full_kv = kv
                if i == evict_delay:
                    kept = []
                    for (k, v), q in zip(kv, queries):
                        pos = kept_positions(q[0, :, lo:hi], k[0], lo, keep_ratio, kernel_size, page_size)
                        kept.append((pos, k[:, :, pos], v[:, :, pos]))
            elif i <= evict_delay:  # cached pass: the block against step 0's prefix and suffix
                past = [(k[:, :, :lo], v[:, :, :lo]) for k, v in full_kv]
                suffix = [(k[:, :, hi:], v[:, :, hi:]) for k, v in full_kv]
                logits, _, queries = model.net(x[:, lo:hi], torch.arange(lo, hi), past, suffix_kv=suffix,
                                               return_queries=True)
                if i == evict_delay:
                    kept = []
                    for (k, v), q in zip(full_kv, queries):
                        pos = kept_positions(q[0], k[0], lo, keep_ratio, kernel_size, page_size)
                        kept.append((pos, k[:, :, pos], v[:, :, pos]))
            else:
                positions = torch.arange(lo, hi)
                past = [(k, v) for _, k, v in kept]
                keys = [torch.cat([pos, positions]) for pos, _, _ in kept]
                logits, _ = model.net(x[:, lo:hi], positions, past, key_positions=keys)
            block = x[0, lo:hi]
            is_masked = block == mask_id
            x0 = logits[0].argmax(-1)
            p = F.softmax(logits[0].float(), dim=-1).gather(-1, x0[:, None]).squeeze(-1)
            confidence = torch.where(is_masked, p, torch.tensor(-torch.inf))
            index = confidence.topk(int(num_transfer[i])).indices
            block[index] = x0[index]
            if not (x[0, lo:hi] == mask_id).any():
                break
    return x
