"""A trainable LLaDA in plain torch, whose state_dict is the official checkpoint layout.

Parameter names are LLaDA-8B's (`model.transformer.wte.weight`, `...blocks.N.{attn_norm, q_proj,
k_proj, v_proj, attn_out, ff_norm, ff_proj, up_proj, ff_out}.weight`, `...ln_f.weight`,
`...ff_out.weight`), so `save_file(model.state_dict())` is a checkpoint vLLM loads through the
plugin. The math is tests/reference/_transformer.py's: RMSNorm, NeoX rotary (rope_theta),
bidirectional attention (scaled_dot_product_attention, is_causal=False), SwiGLU
ff_out(silu(ff_proj(x)) * up_proj(x)), ln_f, untied lm head. No biases, n_kv_heads = n_heads.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def llada_config(*, vocab_size: int, d_model: int, n_layers: int, n_heads: int, mlp_hidden_size: int,
                 max_sequence_length: int, rope_theta: float, ids: dict) -> dict:
    """config.json of an official LLaDA checkpoint with these sizes."""
    return {
        "architectures": ["LLaDAModelLM"], "model_type": "llada", "d_model": d_model,
        "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_heads,
        "mlp_hidden_size": mlp_hidden_size, "mlp_ratio": 4, "vocab_size": vocab_size,
        "embedding_size": vocab_size, "max_sequence_length": max_sequence_length, "rope": True,
        "rope_theta": rope_theta, "rope_full_precision": True, "rms_norm_eps": 1e-05,
        "layer_norm_type": "rms", "block_type": "llama", "activation_type": "silu",
        "include_bias": False, "include_qkv_bias": False, "weight_tying": False, "alibi": False,
        "scale_logits": False, "input_emb_norm": False, "attention_layer_norm": False,
        "mask_token_id": ids["mask"], "eos_token_id": ids["eos"], "pad_token_id": ids["eos"],
        "bos_token_id": ids["bos"], "torch_dtype": "bfloat16",
    }


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight).to(x.dtype)


class Block(nn.Module):
    """One LLaDA "llama" block; parameter names are the official ones."""

    def __init__(self, d: int, n_heads: int, mlp: int, eps: float):
        super().__init__()
        self.n_heads = n_heads
        self.attn_norm, self.ff_norm = RMSNorm(d, eps), RMSNorm(d, eps)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj, self.up_proj = nn.Linear(d, mlp, bias=False), nn.Linear(d, mlp, bias=False)
        self.ff_out = nn.Linear(mlp, d, bias=False)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """h [B, L, d]; cos/sin [L, head_dim] -> [B, L, d]."""
        B, L, d = h.shape
        x = self.attn_norm(h)
        q, k, v = (p(x).view(B, L, self.n_heads, -1).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        h = h + self.attn_out(att.transpose(1, 2).reshape(B, L, d))
        x = self.ff_norm(h)
        return h + self.ff_out(F.silu(self.ff_proj(x)) * self.up_proj(x))


def rope_tables(length: int, head_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """NeoX rotary cos/sin [length, head_dim] (float32)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    freqs = torch.arange(length, dtype=torch.float32, device=device)[:, None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, D] rotated NeoX-style (in float32, returned in x's dtype)."""
    x32 = x.float()
    x1, x2 = x32.chunk(2, dim=-1)
    return (x32 * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


class LLaDA(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        d, n, eps = config["d_model"], config["n_layers"], config["rms_norm_eps"]
        self.head_dim = d // config["n_heads"]
        self.model = nn.Module()
        self.model.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config["vocab_size"], d),
            "blocks": nn.ModuleList(Block(d, config["n_heads"], config["mlp_hidden_size"], eps)
                                    for _ in range(n)),
            "ln_f": RMSNorm(d, eps),
            "ff_out": nn.Linear(d, config["vocab_size"], bias=False),
        })
        self._rope = None

    def init_weights(self, seed: int) -> None:
        """GPT-style init: N(0, 0.02); residual outputs (attn_out, blocks' ff_out) / sqrt(2 n_layers)."""
        g = torch.Generator().manual_seed(seed)
        out_std = 0.02 / math.sqrt(2 * self.config["n_layers"])
        for name, p in self.named_parameters():
            if p.dim() == 1:
                continue
            residual = name.endswith("attn_out.weight") or (
                ".blocks." in name and name.endswith("ff_out.weight"))
            std = out_std if residual else 0.02
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * std)

    def _tables(self, length: int, device):
        if self._rope is None or self._rope[0].shape[0] < length or self._rope[0].device != device:
            self._rope = rope_tables(max(length, 1024), self.head_dim, self.config["rope_theta"], device)
        return self._rope[0][:length], self._rope[1][:length]

    def forward(self, input_ids: torch.Tensor, last: int | None = None) -> torch.Tensor:
        """input_ids [B, L] -> logits [B, L, V], or [B, last, V] for the last `last` positions."""
        t = self.model.transformer
        cos, sin = self._tables(input_ids.shape[1], input_ids.device)
        h = t["wte"](input_ids)
        for block in t["blocks"]:
            h = block(h, cos, sin)
        if last is not None:
            h = h[:, -last:]
        return t["ff_out"](t["ln_f"](h))


@torch.no_grad()
def generate(model, prompt: torch.Tensor, *, gen_length: int, steps: int, block_length: int,
             mask_id: int, autocast: bool = False) -> torch.Tensor:
    """LLaDA's generate (greedy, low_confidence remasking) for a batch of equal-length prompts.

    prompt [B, P] -> generated ids [B, gen_length]. Blocks of block_length are denoised left to
    right, steps // num_blocks steps each; a step commits, per row, the most confident masked
    positions of the current block (how many: get_num_transfer_tokens of tests/reference/llada.py).
    """
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long, device=prompt.device)
    x[:, :P] = prompt
    num_blocks = gen_length // block_length
    per_block = steps // num_blocks
    for b in range(num_blocks):
        hi = P + (b + 1) * block_length
        counts = np.full(per_block, block_length // per_block)
        counts[: block_length % per_block] += 1
        for k in counts:
            with torch.autocast(x.device.type, torch.bfloat16, enabled=autocast):
                logits = model(x, last=gen_length).float()
            p = logits.softmax(-1)
            conf, x0 = p.max(-1)  # [B, gen_length]
            masked = x[:, P:] == mask_id
            conf = torch.where(masked, conf, -torch.inf)
            conf[:, hi - P:] = -torch.inf
            select = conf.topk(int(k), dim=-1).indices
            rows = torch.arange(B, device=x.device)[:, None]
            x[:, P:][rows, select] = x0[rows, select]
    return x[:, P:]
