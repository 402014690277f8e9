"""Per-layer forward of `sparsed`: write this step's K/V into the paged cache, then attend.

A step with no sparse row is plain dense attention: on Hopper it goes to vLLM's FlashAttention-3
(same paged cache layout, fastest dense kernel there), elsewhere to our Triton kernel. A step with
SparseD rows runs our kernel over the whole batch: rows reusing masks walk their kept key blocks,
other rows attend densely; rows computing their masks (the switch step) also get each query's
log-sum-exp, from which the block importance and then the kept blocks of this layer are derived.
"""

import torch

from vllm.logger import init_logger
from vllm.v1.attention.backend import AttentionImpl

from vllm_dlm.attention.metadata import SparsedMetadata, SparseDStep
from vllm_dlm.attention.ops.block_scores import block_scores
from vllm_dlm.attention.ops.paged_attention import paged_attention
from vllm_dlm.attention.sparsity.sparsed import select_key_blocks

logger = init_logger(f"vllm.dlm.{__name__}")


def split_kv_cache(kv_cache: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[num_pages, Hkv, page_size, 2*D] -> K, V views [num_pages, page_size, Hkv, D]."""
    return kv_cache.transpose(1, 2).split(head_dim, dim=-1)


def write_kv(key, value, k_cache, v_cache, slot_mapping) -> None:
    """Scatter key/value [T, Hkv, D] to flat slots (page * page_size + offset); < 0 is padding."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    page_size = k_cache.shape[1]
    pages, offsets = slots // page_size, slots % page_size
    k_cache[pages, offsets] = key[keep].to(k_cache.dtype)
    v_cache[pages, offsets] = value[keep].to(v_cache.dtype)


def _flash_attention_3():
    """vLLM's FA3 varlen function on a Hopper GPU with the FA3 build present, else None."""
    from vllm.platforms import current_platform

    if not current_platform.is_cuda() or current_platform.get_device_capability().major != 9:
        return None
    try:
        from vllm.vllm_flash_attn.flash_attn_interface import flash_attn_varlen_func, is_fa_version_supported
    except ImportError:
        return None
    return flash_attn_varlen_func if is_fa_version_supported(3) else None


class SparsedImpl(AttentionImpl):
    def __init__(self, num_heads, head_size, scale, num_kv_heads, alibi_slopes, sliding_window,
                 kv_cache_dtype, logits_soft_cap=None, attn_type="decoder",
                 kv_sharing_target_layer_name=None, sinks=None, **kwargs) -> None:
        if alibi_slopes is not None or sliding_window is not None or logits_soft_cap or sinks is not None:
            raise NotImplementedError("sparsed: ALiBi, sliding window, softcap and sinks are not supported")
        if kv_cache_dtype not in ("auto", "float16", "bfloat16", "float32"):
            raise NotImplementedError(f"sparsed: kv_cache_dtype {kv_cache_dtype!r} is not supported")
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = float(scale)
        self.num_kv_heads = num_kv_heads
        self.kv_cache_dtype = kv_cache_dtype
        self.kv_sharing_target_layer_name = kv_sharing_target_layer_name
        self.fa3 = _flash_attention_3()
        logger.info_once("vllm-dlm: using the sparsed attention backend (Triton paged kernels%s)",
                         ", FA3 for dense steps" if self.fa3 else "")

    def forward(self, layer, query, key, value, kv_cache, attn_metadata: SparsedMetadata | None,
                output, output_scale=None, output_block_scale=None) -> torch.Tensor:
        if attn_metadata is None:  # profiling run
            return output
        m = attn_metadata
        n = m.num_actual_tokens
        k_cache, v_cache = split_kv_cache(kv_cache, self.head_size)
        if self.kv_sharing_target_layer_name is None and key is not None:
            self._write_kv(layer, key, value, k_cache, v_cache, m.slot_mapping[:n])
        q = query[:n].view(n, self.num_heads, self.head_size)
        out = output[:n].view(n, self.num_heads, self.head_size)
        sparse = m.sparse
        if sparse is None and self.fa3 is not None:
            self.fa3(q=q, k=k_cache, v=v_cache, out=out, cu_seqlens_q=m.query_start_loc,
                     max_seqlen_q=m.max_query_len, seqused_k=m.seq_lens, max_seqlen_k=m.max_seq_len,
                     softmax_scale=self.scale, causal=m.causal, block_table=m.block_table, fa_version=3)
            return output
        lse = None
        if sparse is not None and sparse.compute:
            lse = torch.empty(n, self.num_heads, dtype=torch.float32, device=q.device)
        blocks = sparse.block_lists(layer.layer_name, m.num_reqs, q.device) if sparse is not None else None
        paged_attention(q, k_cache, v_cache, m.block_table, m.query_start_loc, m.seq_lens,
                        m.max_query_len, self.scale, m.causal, out=out, query_pos=m.query_pos,
                        blocks=blocks, lse=lse)
        if lse is not None:
            self._compute_masks(layer.layer_name, sparse, q, key[:n].view(n, self.num_kv_heads, self.head_size), lse)
        return output

    def _write_kv(self, layer, key, value, k_cache, v_cache, slot_mapping) -> None:
        if key.is_cuda:  # vLLM's cache-write kernel (handles padding slots itself)
            from vllm import _custom_ops as ops

            ops.reshape_and_cache_flash(key, value, k_cache, v_cache, slot_mapping,
                                        self.kv_cache_dtype, layer._k_scale, layer._v_scale)
            return
        n = slot_mapping.shape[0]
        write_kv(key[:n], value[:n], k_cache, v_cache, slot_mapping)

    def _compute_masks(self, layer_name: str, sparse: SparseDStep, q, k, lse) -> None:
        """Switch step: each computing row's block importance (its whole sequence is this step's
        query and key), then its kept key blocks for this layer."""
        for job in sparse.compute.values():
            qs, qe = job.query_start, job.query_end
            q_r, k_r, bs = q[qs:qe], k[qs:qe], job.masks.block_size
            scores = block_scores(q_r, k_r, bs, self.scale, lse=lse[qs:qe])
            generated = None
            if job.prompt_blocks is not None:  # isolated: generated keys under their own softmax
                generated = block_scores(q_r, k_r, bs, self.scale, key_start_block=job.prompt_blocks)
            job.masks.layers[layer_name] = select_key_blocks(scores, job.select, job.prompt_blocks, generated)
