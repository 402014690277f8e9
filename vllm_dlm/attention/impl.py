"""Per-layer forward of `sparsed`: write this step's K/V into the paged cache, then attend."""

import torch

from vllm.logger import init_logger
from vllm.v1.attention.backend import AttentionImpl

from vllm_dlm.attention.metadata import SparseDStep, SparsedMetadata
from vllm_dlm.attention.ops.block_scores import block_scores
from vllm_dlm.attention.ops.paged_attention import paged_attention
from vllm_dlm.attention.sparsity.sparsed import select_key_blocks

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
        q = query[:n].view(n, self.num_heads, self.head_size)
        block_mask, mask_block = None, 128
        if attn_metadata.sparse is not None:
            self._compute_masks(layer.layer_name, attn_metadata.sparse, q, key[:n].view(n, self.num_kv_heads, self.head_size))
            block_mask, mask_block = self._batch_mask(layer.layer_name, attn_metadata)
        out = output[:n].view(n, self.num_heads, self.head_size)
        paged_attention(
            q, k_cache, v_cache, attn_metadata.block_table, attn_metadata.query_start_loc,
            attn_metadata.seq_lens, attn_metadata.max_query_len, self.scale, attn_metadata.causal,
            out=out, block_mask=block_mask, mask_block=mask_block,
        )
        return output

    def _compute_masks(self, layer_name: str, step: SparseDStep, q, k) -> None:
        """SparseD switch step: score this request's full-attention tiles, keep its masks."""
        for r in step.compute.values():
            qs, qe = r.query_start, r.query_end
            scores = block_scores(q[qs:qe], k[qs:qe], r.block_size, self.scale)
            r.masks[layer_name] = select_key_blocks(scores, r.select, r.num_prompt_blocks)

    def _batch_mask(self, layer_name: str, m: SparsedMetadata):
        """[R, Hq, nQ, nK] keep mask over blocks of the smallest block size in the batch (a larger
        block is several smaller ones); rows without masks attend densely."""
        reuse = m.sparse.reuse
        if not reuse:
            return None, 128
        mask_block = min(r.block_size for r in reuse.values())
        num_reqs = m.block_table.shape[0]
        n = -(-int(m.seq_lens.max()) // mask_block)
        batch = torch.ones(num_reqs, self.num_heads, n, n, dtype=torch.bool, device=m.seq_lens.device)
        for row, r in reuse.items():
            f = r.block_size // mask_block
            mask = r.masks[layer_name].repeat_interleave(f, 1).repeat_interleave(f, 2)[:, :n, :n]
            batch[row, :, : mask.shape[1], : mask.shape[2]] = mask
        return batch, mask_block
