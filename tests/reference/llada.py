"""Plain-torch LLaDA reference: the model (from an official-layout checkpoint) and the official
generate algorithms, re-implemented from their descriptions:
  `llada_generate`            LLaDA's generate.py (semi-autoregressive blocks, low_confidence/random,
                              Gumbel-max sampling, classifier-free guidance, eos/eot suppression)
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
    """LLaDA (OLMo-style "llama" blocks, no biases) with bidirectional attention, fp32.

    RMSNorm -> q/k/v -> NeoX rotary (rope_theta) -> full softmax attention (GQA by repeating kv
    heads, scale 1/sqrt(head_dim)) -> attn_out -> residual; RMSNorm -> ff_out(silu(ff_proj) *
    up_proj) -> residual; ln_f; lm head ff_out. Shared stack: tests/reference/_transformer.py.
    """

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
    """mask_index [B, N] bool -> LongTensor [B, steps]: how many masks each step unmasks.

    mask_num // steps every step, plus one for the first mask_num % steps steps.
    """
    mask_num = mask_index.sum(dim=1, keepdim=True)
    base, remainder = mask_num // steps, mask_num % steps
    out = torch.zeros(mask_num.size(0), steps, dtype=torch.int64) + base
    for i in range(mask_num.size(0)):
        out[i, : remainder[i]] += 1
    return out


def add_gumbel_noise(logits: torch.Tensor, temperature: float, generator=None) -> torch.Tensor:
    """Gumbel-max in LLaDA's form: exp(logits) / (-log u)^temperature in float64, u ~ U(0, 1).

    At temperature 0 the *same tensor* is returned (no copy): llada_generate relies on that aliasing
    to mirror the official confidence_eos_eot_inf behaviour.
    """
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand(logits.shape, dtype=torch.float64, generator=generator)
    gumbel_noise = (-torch.log(noise)) ** temperature
    return logits.exp() / gumbel_noise


@torch.no_grad()
def llada_generate(model, prompt, *, steps, gen_length, block_length, temperature=0.0,
                   remasking="low_confidence", mask_id, cfg_scale=0.0, logits_eos_inf=False,
                   confidence_eos_eot_inf=False, eos_id=None, eot_id=None,
                   generator=None) -> torch.Tensor:
    """LLaDA's generate.py (semi-autoregressive blocks). prompt [B, P] -> [B, P + gen_length].

    The canvas is the prompt followed by gen_length masks, denoised block by block, left to right,
    with steps // num_blocks steps per block. Each step predicts x0 = argmax over (Gumbel-noised)
    logits at every position, scores masked positions of the current block (low_confidence: the
    softmax probability of x0 under the un-noised logits; random: U(0, 1)), and commits the top
    get_num_transfer_tokens(...)[step] of them. Positions after the block are never committed.

    cfg_scale > 0: classifier-free guidance against a copy whose prompt is all masks,
    logits = un + (cfg_scale + 1) * (cond - un).
    logits_eos_inf: the eos logit is -inf before sampling.
    confidence_eos_eot_inf: after x0 is chosen, noised[..., eos] and logits[..., eot] are -inf (the
    official pairing; at temperature 0 both name the same tensor, so both ids get -inf).
    Random draws (Gumbel noise, then random remasking) come from `generator`.
    """
    if logits_eos_inf or confidence_eos_eot_inf:
        assert eos_id is not None, "eos_id is needed for logits_eos_inf / confidence_eos_eot_inf"
    if confidence_eos_eot_inf:
        assert eot_id is not None, "eot_id is needed for confidence_eos_eot_inf"
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    prompt_index = x != mask_id
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps_per_block = steps // num_blocks
    for b in range(num_blocks):
        block_end = P + (b + 1) * block_length
        block_mask_index = x[:, block_end - block_length:block_end] == mask_id
        num_transfer_tokens = get_num_transfer_tokens(block_mask_index, steps_per_block)
        for i in range(steps_per_block):
            mask_index = x == mask_id
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                logits, un_logits = model(torch.cat([x, un_x], dim=0)).chunk(2, dim=0)
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            else:
                logits = model(x)
            if logits_eos_inf:
                logits[:, :, eos_id] = -torch.inf
            logits_with_noise = add_gumbel_noise(logits, temperature, generator)
            x0 = torch.argmax(logits_with_noise, dim=-1)  # [B, L]
            if confidence_eos_eot_inf:
                logits_with_noise[:, :, eos_id] = -torch.inf
                logits[:, :, eot_id] = -torch.inf
            if remasking == "low_confidence":
                p = F.softmax(logits, dim=-1)
                x0_p = torch.gather(p, -1, x0.unsqueeze(-1)).squeeze(-1)  # [B, L]
            elif remasking == "random":
                x0_p = torch.rand(x0.shape, generator=generator)
            else:
                raise NotImplementedError(remasking)
            x0_p[:, block_end:] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(-np.inf))
            transfer_index = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(B):
                _, select = torch.topk(confidence[j], k=int(num_transfer_tokens[j, i]))
                transfer_index[j, select] = True
            x[transfer_index] = x0[transfer_index]
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
