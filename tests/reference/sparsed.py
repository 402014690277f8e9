"""Plain-torch SparseD reference (INV-WZQ/SparseD's LLaDA attention, re-implemented from its
description): a LLaDA reference model whose attention follows SparseD, to run under the
`llada_generate` / `fast_dllm_generate` references.

Every forward pass is one denoising step. Steps up to and including the switch step
int(skip * steps) + 1 use full attention; at the switch step each layer derives its masks from that
step's softmax(QK^T / sqrt(head_dim)) (SparseD's code divides by sqrt(n_heads)): block importance is
the mean of the probabilities over each block_size x block_size tile (edge tiles zero-padded), each
query block keeps max(1, int(n * select) + 1) key blocks of n. Isolated: prompt blocks are those of
the joint top-k that lie before the first generated block (ceil(prompt_len / block_size), at most
the last block), generated blocks are the top-k of the generated blocks under a softmax over the
generated keys only. Later steps attend only inside the kept blocks (query block by position).
"""

import torch


def _tile_means(probs: torch.Tensor, block_size: int) -> torch.Tensor:
    """[H, L, S] -> [H, ceil(L/bs), ceil(S/bs)] means over zero-padded tiles."""
    h, length, keys = probs.shape
    nq, nk = -(-length // block_size), -(-keys // block_size)
    padded = torch.zeros(h, nq * block_size, nk * block_size)
    padded[:, :length, :keys] = probs
    return padded.view(h, nq, block_size, nk, block_size).mean(dim=(2, 4))


def _top_mask(importance: torch.Tensor, select: float) -> torch.Tensor:
    n = importance.shape[-1]
    k = min(n, max(1, int(n * select) + 1))
    index = importance.topk(k, dim=-1).indices
    return torch.zeros_like(importance, dtype=torch.bool).scatter_(-1, index, True)


def sparsed_block_mask(scores: torch.Tensor, prompt_len: int, select: float, block_size: int,
                       isolated: bool) -> torch.Tensor:
    """One layer's full-pass scores [H, L, L] -> keep mask [H, nB, nB] over blocks."""
    mask = _top_mask(_tile_means(scores.softmax(-1), block_size), select)
    if not isolated:
        return mask
    n = mask.shape[-1]
    first_generated = min(-(-prompt_len // block_size), n - 1)
    mask[..., first_generated:] = False
    generated = scores[..., first_generated * block_size :].softmax(-1)
    mask[..., first_generated:] |= _top_mask(_tile_means(generated, block_size), select)
    return mask


class SparseDModel:
    """`model(x)` / `model.net(...)` like LLaDAReference, with SparseD attention (batch size 1)."""

    def __init__(self, ref, *, steps: int, prompt_len: int, skip=0.2, select=0.3, block_size=128,
                 isolated=True):
        self.ref, self.prompt_len = ref, prompt_len
        self.select, self.block_size, self.isolated = select, block_size, isolated
        self.switch = int(skip * steps) + 1
        self.step = 0
        self.masks: dict[int, torch.Tensor] = {}

    def _hook(self, layer, scores, positions, key_positions):
        full_pass = scores.shape[-2] == scores.shape[-1]
        if layer not in self.masks:
            if self.step >= self.switch and full_pass:
                self.masks[layer] = sparsed_block_mask(scores[0], self.prompt_len, self.select,
                                                       self.block_size, self.isolated)
            return scores
        bs = self.block_size
        keep = self.masks[layer][:, positions // bs][:, :, key_positions // bs]
        return scores.masked_fill(~keep[None], float("-inf"))

    def net(self, input_ids, positions=None, past_kv=None, suffix_kv=None, **kwargs):
        """As LLaDAReference.net: (logits, kv). One call is one denoising step."""
        out = self.ref.net(input_ids, positions, past_kv, suffix_kv, attn_hook=self._hook, **kwargs)
        self.step += 1
        return out

    def __call__(self, input_ids):
        return self.net(input_ids)[0]
