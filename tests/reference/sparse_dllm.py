"""Plain-torch Sparse-dLLM reference (OpenMOSS/Sparse-dLLM's LLaDA generate and CustomCache,
re-implemented from their description), greedy, low_confidence, batch size 1.

Per block: steps 0 .. evict_delay are full passes over the whole sequence (full attention); the
last of them also caches every layer's post-RoPE K/V of the prefix and suffix (the block removed)
and keeps, per layer, the int(n * keep_ratio) tokens with the highest importance: the block's mean
query against each cached key, averaged over heads, max-pooled over `kernel_size` neighbours
(stride 1). The block's later steps run the block alone against the kept K/V plus its own fresh
K/V. `model` is a LLaDA reference (or SparseDModel: SparseD masks then apply on top).
"""

import torch
import torch.nn.functional as F

from tests.reference.llada import get_num_transfer_tokens


def kept_positions(q_block, k, block_start: int, keep_ratio: float, kernel_size: int) -> torch.Tensor:
    """q_block [H, B, D] the block's queries, k [Hkv, L, D] all keys -> kept positions outside the
    block (in importance order)."""
    num_heads, block_len, _ = q_block.shape
    cached = torch.cat([k[:, :block_start], k[:, block_start + block_len :]], dim=1)
    cached = cached.repeat_interleave(num_heads // k.shape[0], dim=0)
    avg_q = q_block.mean(dim=1)  # [H, D]
    importance = (avg_q[:, None, :] @ cached.transpose(1, 2)).squeeze(1).mean(dim=0)  # [n]
    if kernel_size > 1:
        importance = F.max_pool1d(importance[None, None], kernel_size=kernel_size, stride=1,
                                  padding=kernel_size // 2)[0, 0]
    index = importance.topk(int(importance.numel() * keep_ratio)).indices
    return torch.where(index < block_start, index, index + block_len)


@torch.no_grad()
def sparse_dllm_generate(model, prompt, *, steps, gen_length, block_length, mask_id,
                         keep_ratio=0.5, kernel_size=3, evict_delay=1) -> torch.Tensor:
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    steps_per_block = steps // (gen_length // block_length)
    for b in range(gen_length // block_length):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        num_transfer = get_num_transfer_tokens(x[:, lo:hi] == mask_id, steps_per_block)[0]
        kept = None
        for i in range(steps_per_block):
            if i <= evict_delay:
                logits, kv, queries = model.net(x, return_queries=True)
                logits = logits[:, lo:hi]
                if i == evict_delay:
                    kept = []
                    for (k, v), q in zip(kv, queries):
                        pos = kept_positions(q[0, :, lo:hi], k[0], lo, keep_ratio, kernel_size)
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
