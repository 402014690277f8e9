"""Proposals and confidences for masked positions: the remasking rules of LLaDA and Dream.

Each rule maps logits [n, vocab] of n masked positions to (x0 [n] proposed tokens, confidence [n]);
the step then commits the most confident proposals. All math in float32 (float64 for LLaDA's
Gumbel noise, as its reference does).
"""

import torch
import torch.nn.functional as F


def llada_gumbel_argmax(logits: torch.Tensor, temperature: float, generator=None) -> torch.Tensor:
    """LLaDA's `add_gumbel_noise` + argmax: exp(logits) / (-log u)^T, greedy when T == 0."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits64 = logits.to(torch.float64)
    noise = torch.rand(logits64.shape, dtype=torch.float64, device=logits.device, generator=generator)
    gumbel_noise = (-torch.log(noise)) ** temperature
    return (logits64.exp() / gumbel_noise).argmax(dim=-1)


def llada_propose(
    logits: torch.Tensor, remasking: str, temperature: float, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaDA: x0 from (noisy) argmax; confidence = softmax(logits)[x0] or uniform random."""
    x0 = llada_gumbel_argmax(logits, temperature, generator)
    if remasking == "low_confidence":
        probs = F.softmax(logits.float(), dim=-1)
        confidence = probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    elif remasking == "random":
        confidence = torch.rand(x0.shape, device=logits.device, generator=generator)
    else:
        raise ValueError(f"unknown LLaDA remasking {remasking!r}")
    return x0, confidence


def _filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, sorted_idx = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_idx, remove)
    return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def _filter_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    top_k = min(top_k, logits.size(-1))
    kth = torch.topk(logits, top_k)[0][..., -1, None]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def dream_propose(
    logits: torch.Tensor,
    remasking: str,
    temperature: float,
    top_p: float = 1.0,
    top_k: int = 0,
    generator=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream's `sample_tokens`: x0 sampled (or argmax) from softmax(logits / T) after top-p/top-k;
    confidence = p(x0) (`maskgit_plus`, `origin`), top1 - top2 (`topk_margin`) or negative entropy
    (`entropy`)."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    if 0 < top_p < 1:
        logits = _filter_top_p(logits, top_p)
    if top_k > 0:
        logits = _filter_top_k(logits, top_k)
    probs = F.softmax(logits, dim=-1)
    if temperature > 0:
        x0 = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        confidence = probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if remasking == "topk_margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif remasking == "entropy":
        confidence = (probs * torch.log(probs + 1e-10)).sum(dim=-1)
    return x0, confidence
