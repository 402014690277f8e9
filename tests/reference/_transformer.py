"""A plain-torch bidirectional Llama/Qwen2 block stack (fp32), shared by the LLaDA and Dream
references. Weights come in as a dict with canonical names; the model files map official names.

forward(input_ids [B, L], positions [L] | None, past_kv | None) -> (logits [B, L, V], kv)
`past_kv` is a list per layer of (k, v) [B, kv_heads, S, head_dim] for positions that are not
recomputed (prefix/dual caches); the new tokens attend to past + themselves, bidirectionally.
`suffix_kv` (same layout) are cached keys/values after the new tokens (dual cache).
`attn_hook(layer, scores [B, H, L, S], positions [L], key_positions [S]) -> scores` may edit each
layer's scaled attention scores before the softmax (sparse-attention references); key_positions
default to [0, S) (a list: one tensor per layer). With `return_queries`, the post-RoPE queries [B, H, L, D] of every layer are
returned as a third output.
"""

import math

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """NeoX-style rotary embedding. x: [B, H, L, D], positions: [L]."""
    dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return x * emb.cos() + rotate_half(x) * emb.sin()


class BidirectionalTransformer(torch.nn.Module):
    def __init__(self, weights: dict, *, num_layers, num_heads, num_kv_heads, rope_theta, eps, qkv_bias):
        super().__init__()
        self.w = weights
        self.num_layers, self.num_heads, self.num_kv_heads = num_layers, num_heads, num_kv_heads
        self.rope_theta, self.eps, self.qkv_bias = rope_theta, eps, qkv_bias
        self.head_dim = weights["embed"].shape[1] // num_heads

    def _linear(self, x, name, bias=False):
        return F.linear(x, self.w[name + ".weight"], self.w.get(name + ".bias") if bias else None)

    @torch.no_grad()
    def forward(self, input_ids, positions=None, past_kv=None, suffix_kv=None, attn_hook=None,
                key_positions=None, return_queries=False):
        B, L = input_ids.shape
        if positions is None:
            positions = torch.arange(L)
        h = self.w["embed"][input_ids].float()
        new_kv, queries = [], []
        for i in range(self.num_layers):
            p = f"layers.{i}"
            x = rms_norm(h, self.w[f"{p}.input_norm"], self.eps)
            q = self._linear(x, f"{p}.q", self.qkv_bias).view(B, L, self.num_heads, self.head_dim)
            k = self._linear(x, f"{p}.k", self.qkv_bias).view(B, L, self.num_kv_heads, self.head_dim)
            v = self._linear(x, f"{p}.v", self.qkv_bias).view(B, L, self.num_kv_heads, self.head_dim)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            q = apply_rope(q, positions, self.rope_theta)
            k = apply_rope(k, positions, self.rope_theta)
            new_kv.append((k, v))
            queries.append(q)
            if past_kv is not None:
                pk, pv = past_kv[i]
                k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
            if suffix_kv is not None:
                sk, sv = suffix_kv[i]
                k, v = torch.cat([k, sk], dim=2), torch.cat([v, sv], dim=2)
            rep = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            if attn_hook is not None:
                keys = torch.arange(scores.shape[-1]) if key_positions is None else key_positions
                keys = keys[i] if isinstance(keys, list) else keys
                scores = attn_hook(i, scores, positions, keys)
            att = torch.softmax(scores, dim=-1) @ v
            att = att.transpose(1, 2).reshape(B, L, self.num_heads * self.head_dim)
            h = h + self._linear(att, f"{p}.o")
            x = rms_norm(h, self.w[f"{p}.post_norm"], self.eps)
            h = h + self._linear(F.silu(self._linear(x, f"{p}.gate")) * self._linear(x, f"{p}.up"), f"{p}.down")
        h = rms_norm(h, self.w["final_norm"], self.eps)
        logits = F.linear(h, self.w["lm_head"])
        return (logits, new_kv, queries) if return_queries else (logits, new_kv)
