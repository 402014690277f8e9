"""Per-layer forward of `sparsed`: write this step's K/V into the paged cache, then attend."""

import torch

from vllm.logger import init_logger
from vllm.v1.attention.backend import AttentionImpl

from vllm_dlm.attention.metadata import SparsedMetadata
from vllm_dlm.attention.ops.paged_attention import paged_attention

logger = init_logger(f"vllm.dlm.{__name__}")


def split_kv_cache(kv_cache: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[num_pages, Hkv, page_size, 2*D] -> K, V views [num_pages, page_size, Hkv, D]."""
    k = kv_cache[..., :head_dim].permute(0, 2, 1, 3)
    v = kv_cache[..., head_dim:].permute(0, 2, 1, 3)
    return k, v


def write_kv(key, value, k_cache, v_cache, slot_mapping) -> None:
    """Scatter key/value [T, Hkv, D] to flat slots (page * page_size + offset); < 0 is padding."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    page_size = k_cache.shape[1]
    pages, offsets = slots // page_size, slots % page_size
    k_cache[pages, offsets] = key[keep].to(k_cache.dtype)
    v_cache[pages, offsets] = value[keep].to(v_cache.dtype)


class SparsedImpl(AttentionImpl):
    def __init__(self, num_heads, head_size, scale, num_kv_heads, alibi_slopes, sliding_window,
                 kv_cache_dtype, logits_soft_cap=None, attn_type="decoder",
                 kv_sharing_target_layer_name=None, sinks=None, **kwargs) -> None:
        if alibi_slopes is not None or sliding_window is not None or logits_soft_cap or sinks is not None:
            raise NotImplementedError("sparsed: ALiBi, sliding window, softcap and sinks are not supported")
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = float(scale)
        self.num_kv_heads = num_kv_heads
        self.kv_sharing_target_layer_name = kv_sharing_target_layer_name
        logger.info_once("vllm-dlm: using the sparsed attention backend (Triton paged kernels)")

    def forward(self, layer, query, key, value, kv_cache, attn_metadata: SparsedMetadata | None,
                output, output_scale=None, output_block_scale=None) -> torch.Tensor:
        if attn_metadata is None:  # profiling run
            return output
        n = attn_metadata.num_actual_tokens
        k_cache, v_cache = split_kv_cache(kv_cache, self.head_size)
        if self.kv_sharing_target_layer_name is None and key is not None:
            write_kv(key[:n], value[:n], k_cache, v_cache, attn_metadata.slot_mapping[:n])
        out = output[:n].view(n, self.num_heads, self.head_size)
        paged_attention(
            query[:n].view(n, self.num_heads, self.head_size), k_cache, v_cache,
            attn_metadata.block_table, attn_metadata.query_start_loc, attn_metadata.seq_lens,
            attn_metadata.max_query_len, self.scale, attn_metadata.causal, out=out,
        )
        return output
