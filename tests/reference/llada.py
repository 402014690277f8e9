"""Plain-torch LLaDA reference: the model (from an official-layout checkpoint) and the official
generate algorithms, re-implemented from their descriptions:
  `llada_generate`            LLaDA's generate.py (semi-autoregressive blocks, low_confidence/random)
  `fast_dllm_generate`        Fast-dLLM's generate_with_prefix_cache / generate_with_dual_cache,
                              with optional confidence-threshold parallel decoding
"""

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tests.reference._transformer import BidirectionalTransformer


class LLaDAReference(torch.nn.Module):
    def __init__(self, config: dict, weights: dict):
        super().__init__()
        self.config = config
        n_layers = config["n_layers"]
        t = "model.transformer."
        w = {"embed": weights[t + "wte.weight"].float(), "final_norm": weights[t + "ln_f.weight"].float(),
             "lm_head": weights[t + "ff_out.weight"].float()}
        names = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "attn_out": "o", "ff_proj": "gate",
                 "up_proj": "up", "ff_out": "down", "attn_norm": "input_norm", "ff_norm": "post_norm"}
        for i in range(n_layers):
            for theirs, ours in names.items():
                tensor = weights[f"{t}blocks.{i}.{theirs}.weight"].float()
                w[f"layers.{i}.{ours}" + ("" if "norm" in ours else ".weight")] = tensor
        self.net = BidirectionalTransformer(
            w, num_layers=n_layers, num_heads=config["n_heads"],
            num_kv_heads=config.get("n_kv_heads") or config["n_heads"],
            rope_theta=config["rope_theta"], eps=config["rms_norm_eps"], qkv_bias=False,
        )

    @classmethod
    def from_pretrained(cls, path) -> "LLaDAReference":
        path = Path(path)
        return cls(json.loads((path / "config.json").read_text()), load_file(path / "model.safetensors"))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, L] -> logits [B, L, V] (float32), bidirectional attention."""
        return self.net(input_ids)[0]


def get_num_transfer_tokens(mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    """[B, N] bool -> [B, steps]: masks spread evenly, remainder to the first steps."""
    mask_num = mask_index.sum(dim=1, keepdim=True)
    base, remainder = mask_num // steps, mask_num % steps
    out = torch.zeros(mask_num.size(0), steps, dtype=torch.int64) + base
    for i in range(mask_num.size(0)):
        out[i, : remainder[i]] += 1
    return out


def add_gumbel_noise(logits: torch.Tensor, temperature: float, generator=None) -> torch.Tensor:
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand(logits.shape, dtype=torch.float64, generator=generator)
    return logits.exp() / (-torch.log(noise)) ** temperature


@torch.no_grad()
def llada_generate(model, prompt, *, steps, gen_length, block_length, temperature=0.0,
                   remasking="low_confidence", mask_id, generator=None) -> torch.Tensor:
    """LLaDA generate.py. prompt [1, P] -> [1, P + gen_length]."""
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    for b in range(num_blocks):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        num_transfer = get_num_transfer_tokens(x[:, lo:hi] == mask_id, steps)
        for i in range(steps):
            mask_index = x == mask_id
            logits = model(x)
            x0 = torch.argmax(add_gumbel_noise(logits, temperature, generator), dim=-1)
            if remasking == "low_confidence":
                p = F.softmax(logits, dim=-1)
                x0_p = torch.gather(p, -1, x0.unsqueeze(-1)).squeeze(-1)
            elif remasking == "random":
                x0_p = torch.rand(x0.shape, generator=generator)
            else:
                raise NotImplementedError(remasking)
            x0_p[:, hi:] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(-np.inf))
            _, select = torch.topk(confidence[0], k=int(num_transfer[0, i]))
            x[0, select] = x0[0, select]
    return x


def _transfer_index(logits, mask_index, x, num_transfer, threshold):
    """Fast-dLLM get_transfer_index, greedy, low_confidence; logits/mask_index/x over a span."""
    x0 = logits.argmax(dim=-1)
    p = F.softmax(logits.float(), dim=-1)
    x0_p = torch.gather(p, -1, x0.unsqueeze(-1)).squeeze(-1)
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, torch.tensor(-np.inf))
    if threshold is not None:
        k = int(mask_index.sum())
    else:
        k = int(num_transfer)
    transfer = torch.zeros_like(mask_index)
    _, select = torch.topk(confidence[0], k=k)
    transfer[0, select] = True
    if threshold is not None:
        for j in range(1, k):
            if confidence[0, select[j]] < threshold:
                transfer[0, select[j]] = False
    return x0, transfer


@torch.no_grad()
def fast_dllm_generate(model, prompt, *, steps, gen_length, block_length, mask_id,
                       cache="prefix", threshold=None) -> torch.Tensor:
    """Fast-dLLM's prefix / dual cache generation (greedy, low_confidence).

    Per block: step 0 runs the whole sequence and keeps every layer's KV; the following steps run
    only the canvas from the block on (`prefix`: block + masked suffix, against cached prefix KV) or
    only the block (`dual`: against cached prefix and suffix KV). With `threshold`, a step commits
    the top-1 plus every position at or above the threshold, and a block ends when filled.
    """
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    for b in range(num_blocks):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        num_transfer = get_num_transfer_tokens(x[:, lo:hi] == mask_id, steps_per_block)[0]
        logits, kv = model.net(x)
        mask_index = x == mask_id
        mask_index[:, hi:] = False
        x0, transfer = _transfer_index(logits, mask_index, x, num_transfer[0], threshold)
        x[transfer] = x0[transfer]
        prefix_kv = [(k[:, :, :lo], v[:, :, :lo]) for k, v in kv]
        i = 1
        while (x[:, lo:hi] == mask_id).any():
            if threshold is None and i >= steps_per_block:
                break
            if cache == "prefix":
                span = x[:, lo:]
                positions = torch.arange(lo, x.shape[1])
                logits, _ = model.net(span, positions, prefix_kv)
            else:
                span = x[:, lo:hi]
                positions = torch.arange(lo, hi)
                # keys: cached prefix, the block (recomputed), cached suffix
                suffix_kv = [(k[:, :, hi:], v[:, :, hi:]) for k, v in kv]
                logits, _ = model.net(span, positions, prefix_kv, suffix_kv)
            mask_index = span == mask_id
            mask_index[:, hi - lo:] = False
            n = num_transfer[i] if i < steps_per_block else 0
            x0, transfer = _transfer_index(logits, mask_index, span, n, threshold)
            span = torch.where(transfer, x0, span)
            x[:, lo:lo + span.shape[1]] = span
            i += 1
    return x
