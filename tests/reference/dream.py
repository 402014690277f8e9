"""Plain-torch Dream reference: the model (Qwen2 layout, bidirectional) and Dream's
`diffusion_generate` sampling loop (`_sample`), re-implemented from its description."""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tests.reference._transformer import BidirectionalTransformer


class DreamReference(torch.nn.Module):
    """Dream (Qwen2 blocks: qkv bias, RMSNorm, NeoX rotary, GQA, SiLU-gated MLP) with
    bidirectional attention, fp32. Logits at position j predict token j + 1 (dream_generate shifts).
    """

    def __init__(self, config: dict, weights: dict):
        super().__init__()
        self.config = config
        n = config["num_hidden_layers"]
        w = {"embed": weights["model.embed_tokens.weight"].float(),
             "final_norm": weights["model.norm.weight"].float(), "lm_head": weights["lm_head.weight"].float()}
        names = {"self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v",
                 "self_attn.o_proj": "o", "mlp.gate_proj": "gate", "mlp.up_proj": "up", "mlp.down_proj": "down"}
        for i in range(n):
            pre = f"model.layers.{i}."
            for theirs, ours in names.items():
                w[f"layers.{i}.{ours}.weight"] = weights[pre + theirs + ".weight"].float()
                if pre + theirs + ".bias" in weights:
                    w[f"layers.{i}.{ours}.bias"] = weights[pre + theirs + ".bias"].float()
            w[f"layers.{i}.input_norm"] = weights[pre + "input_layernorm.weight"].float()
            w[f"layers.{i}.post_norm"] = weights[pre + "post_attention_layernorm.weight"].float()
        self.net = BidirectionalTransformer(
            w, num_layers=n, num_heads=config["num_attention_heads"],
            num_kv_heads=config["num_key_value_heads"], rope_theta=config["rope_theta"],
            eps=config["rms_norm_eps"], qkv_bias=True,
        )

    @classmethod
    def from_pretrained(cls, path) -> "DreamReference":
        path = Path(path)
        return cls(json.loads((path / "config.json").read_text()), load_file(path / "model.safetensors"))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, L] -> logits [B, L, V] (float32), bidirectional attention."""
        return self.net(input_ids)[0]


def sample_tokens(logits, temperature=0.0, top_p=None, top_k=None, margin_confidence=False,
                  neg_entropy=False, generator=None):
    """Dream's sample_tokens. logits [N, V] -> (confidence [N], x0 [N]).

    temperature > 0 divides the logits and samples x0 ~ softmax (confidence = its probability);
    otherwise x0 is the argmax. top_p / top_k set filtered logits to finfo.min first.
    margin_confidence: top-1 minus top-2 probability; neg_entropy: sum p log(p + 1e-10).
    """
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cum > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_idx, remove)
        logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1)))[0][..., -1, None]
        logits = logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        x0 = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if margin_confidence:
        top2 = torch.sort(probs, dim=-1, descending=True)[0]
        confidence = top2[:, 0] - top2[:, 1]
    if neg_entropy:
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, x0


@torch.no_grad()
def dream_generate(model, input_ids, *, max_new_tokens, steps, eps=1e-3, alg="maskgit_plus",
                   alg_temp=0.0, temperature=0.0, top_p=None, top_k=None, mask_token_id,
                   generator=None) -> torch.Tensor:
    """Dream's diffusion_generate / _sample. input_ids [B, P] -> [B, P + max_new_tokens].

    The whole canvas (prompt + max_new_tokens masks) is denoised over `steps` steps along
    timesteps linspace(1, eps, steps + 1). Logits are shifted right by one (position j reads the
    prediction made at j - 1). alg "origin": each mask is revealed with probability 1 - s/t (1 on
    the last step). Otherwise ("maskgit_plus", "topk_margin", "entropy") int(num_masks * (1 - s/t))
    masks (all on the last step) with the highest confidence are committed; alg_temp > 0 samples
    them from softmax(confidence / alg_temp) instead. Random draws come from `generator`.
    """
    if alg not in ("origin", "maskgit_plus", "topk_margin", "entropy"):
        raise RuntimeError(f"Unknown alg: {alg}")
    x = F.pad(input_ids, (0, max_new_tokens), value=mask_token_id)
    timesteps = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        mask_index = x == mask_token_id
        logits = model(x)
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        mask_logits = logits[mask_index]
        t, s = timesteps[i], timesteps[i + 1]
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = torch.zeros_like(x[mask_index]) + mask_token_id
            reveal = torch.rand(x0.shape, generator=generator) < p_transfer
            if reveal.any():
                _, x0[reveal] = sample_tokens(mask_logits[reveal], temperature, top_p, top_k,
                                              generator=generator)
            x[mask_index] = x0.clone()
            continue
        confidence, x0 = sample_tokens(
            mask_logits, temperature, top_p, top_k, margin_confidence=alg == "topk_margin",
            neg_entropy=alg == "entropy", generator=generator,
        )
        num_mask_token = mask_index.sum() / mask_index.shape[0]
        n = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
        full_confidence = torch.full_like(x, -torch.inf, dtype=logits.dtype)
        full_confidence[mask_index] = confidence
        if n > 0:
            if not alg_temp:
                _, transfer_index = torch.topk(full_confidence, n)
            else:
                weights = F.softmax(full_confidence / alg_temp, dim=-1)
                transfer_index = torch.multinomial(weights, n, generator=generator)
            x_ = torch.zeros_like(x) + mask_token_id
            x_[mask_index] = x0.clone()
            rows = torch.arange(x.size(0)).unsqueeze(1).expand_as(transfer_index)
            x[rows, transfer_index] = x_[rows, transfer_index]
    return x
