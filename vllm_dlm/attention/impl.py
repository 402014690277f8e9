"""Per-layer forward of `sparsed`: write this step's K/V into the paged cache, then attend.

Which kernel runs a step:
  no sparse row                  dense: vLLM's FlashAttention-3 on Hopper (same paged cache
                                 layout), else our Triton kernel
  SparseD block lists only       on Hopper, FA3 over per-(head, query block) virtual sequences
                                 whose block tables list the kept blocks' pages
                                 (`ops.fa3_sparse`, built once per step for all layers); else
                                 our Triton kernel walking the lists
  Sparse-dLLM kept tokens        our Triton kernel over token lists (with SparseD keep bits when
  (and their composition)        the row also has masks); kept whole pages (evict_unit="page")
                                 without SparseD work in the step: FA3 with a per-layer block
                                 table listing only the kept pages
After the attention, rows at their SparseD switch step derive this layer's masks from the block
importance (reusing each query's log-sum-exp from the attention), and rows in their block's
eviction pass select this layer's kept tokens (`sparsity.plan.StepSparsity` says which rows).

VLLM_DLM_KERNELS=torch runs the kernels' plain-torch twins (`ops.reference`, same arguments and
semantics, tested equal) instead of our Triton kernels: on CPU they are ~100x faster than the
Triton interpreter, for demos and the quality harness; CI keeps the Triton kernels.
FA3 (dense, and SparseD virtual sequences) needs a head size FA3 is built for.
VLLM_DLM_FA3=twin runs the Hopper dispatch anywhere (CPU tests of the FA3 paths): FA3's torch twin
(`reference.varlen_paged_attention_reference`) stands in for FlashAttention-3, at any head size.
"""

import functools
import os

import torch

from vllm.logger import init_logger
from vllm.v1.attention.backend import AttentionImpl

from vllm_dlm.attention.metadata import SparsedMetadata
from vllm_dlm.attention.ops import fa3_sparse
from vllm_dlm.attention.ops import reference
from vllm_dlm.attention.ops.block_scores import block_scores as triton_block_scores
from vllm_dlm.attention.ops.paged_attention import paged_attention as triton_paged_attention
from vllm_dlm.attention.sparsity.eviction import compact_kept_pages, live_pages, select_kept_tokens
from vllm_dlm.attention.sparsity.plan import StepSparsity
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


FA3_HEAD_SIZES = (64, 96, 128, 192, 256)
KERNELS = os.environ.get("VLLM_DLM_KERNELS", "triton")
if KERNELS not in ("triton", "torch"):
    raise ValueError(f"VLLM_DLM_KERNELS must be 'triton' or 'torch', got {KERNELS!r}")
TORCH_KERNELS = KERNELS == "torch"
FA3_CHOICE = os.environ.get("VLLM_DLM_FA3", "auto")
if FA3_CHOICE not in ("auto", "twin"):
    raise ValueError(f"VLLM_DLM_FA3 must be 'auto' or 'twin', got {FA3_CHOICE!r}")


def _torch_paged_attention(q, k_cache, v_cache, block_table, query_start_loc, seq_lens, max_query_len,
                           scale, causal=False, out=None, query_pos=None, blocks=None, tokens=None,
                           lse=None, num_splits=1, config=None, max_seq_len=None):
    """`paged_attention`'s signature on its torch twin (num_splits / config do not apply)."""
    result = reference.paged_attention_reference(q, k_cache, v_cache, block_table, query_start_loc,
                                                 seq_lens, scale, causal, query_pos, blocks, tokens, lse)
    return result if out is None else out.copy_(result)


def _torch_block_scores(q, k, block_size, scale, lse=None, key_start_block=0):
    return reference.block_scores_reference(q, k, block_size, scale, key_start_block).to(q.device)


paged_attention = _torch_paged_attention if TORCH_KERNELS else triton_paged_attention
block_scores = _torch_block_scores if TORCH_KERNELS else triton_block_scores


@functools.cache
def _warm_up_block_scores(num_heads, num_kv_heads, head_size, block_size, dtype, device) -> None:
    """Once per process and model shape, at the first real forward (vLLM's kernel warm-up): the
    switch step's block-importance kernels at the server's SparseD block size (a request asking
    for another block size compiles its own at its first switch step)."""
    from vllm_dlm.attention.ops.block_scores import warm_up

    warm_up(num_heads, num_kv_heads, head_size, block_size, dtype, device)


def _server_mask_block_size() -> int:
    """SparseD's block size from `--additional-config '{"dlm": {"block_size": ...}}'`, else its default."""
    from vllm.config import get_current_vllm_config_or_none

    from vllm_dlm.config import SparseDParams, parse_server_defaults

    config = get_current_vllm_config_or_none()  # set while vLLM builds the model
    defaults = parse_server_defaults(config.additional_config if config is not None else None)
    return defaults.block_size or SparseDParams.block_size


def _fa3_twin(*, fa_version=3, **kwargs):
    """FA3's varlen call on its torch twin (same keywords; non-causal, any head size)."""
    return reference.varlen_paged_attention_reference(**kwargs)


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
        if FA3_CHOICE == "twin":
            self.fa3 = _fa3_twin
        else:
            self.fa3 = _flash_attention_3() if head_size in FA3_HEAD_SIZES else None
        self._fa3_v3 = functools.partial(self.fa3, fa_version=3) if self.fa3 else None
        # VLLM_DLM_SPARSE_KERNEL=triton keeps SparseD steps on our kernel even where FA3 could
        # run them (benchmarks compare the two).
        self.sparse_on_fa3 = os.environ.get("VLLM_DLM_SPARSE_KERNEL", "auto") != "triton"
        self.mask_block_size = _server_mask_block_size()
        logger.info_once("vllm-dlm: using the sparsed attention backend (Triton paged kernels%s)",
                         ", FA3 for dense steps" if self.fa3 else "")

    def forward(self, layer, query, key, value, kv_cache, attn_metadata: SparsedMetadata | None,
                output, output_scale=None, output_block_scale=None) -> torch.Tensor:
        if attn_metadata is None:  # profiling run
            return output
        if query.is_cuda and not TORCH_KERNELS:
            _warm_up_block_scores(self.num_heads, self.num_kv_heads, self.head_size, self.mask_block_size,
                                  query.dtype, query.device)
        m = attn_metadata
        n = m.num_actual_tokens
        k_cache, v_cache = split_kv_cache(kv_cache, self.head_size)
        if self.kv_sharing_target_layer_name is None and key is not None:
            self._write_kv(layer, key, value, k_cache, v_cache, m.slot_mapping[:n])
        q = query[:n].view(n, self.num_heads, self.head_size)
        out = output[:n].view(n, self.num_heads, self.head_size)
        sparse = m.sparse
        k = key[:n].view(n, self.num_kv_heads, self.head_size) if key is not None else None
        name = layer.layer_name
        need_lse = sparse is not None and bool(sparse.compute_masks)
        dense = sparse is None or not (sparse.masks or sparse.kept)
        if dense and self.fa3 is not None:
            result = self.fa3(q=q, k=k_cache, v=v_cache, out=out, cu_seqlens_q=m.query_start_loc,
                              max_seqlen_q=m.max_query_len, seqused_k=m.seq_lens, max_seqlen_k=m.max_seq_len,
                              softmax_scale=self.scale, causal=m.causal, block_table=m.block_table,
                              fa_version=3, return_softmax_lse=need_lse)
            lse = result[1].t() if need_lse else None  # [Hq, T] -> [T, Hq]
        elif dense:
            lse = torch.empty(n, self.num_heads, dtype=torch.float32, device=q.device) if need_lse else None
            paged_attention(q, k_cache, v_cache, m.block_table, m.query_start_loc, m.seq_lens,
                            m.max_query_len, self.scale, m.causal, out=out, query_pos=m.query_pos,
                            lse=lse, num_splits=None, max_seq_len=m.max_seq_len)
        elif self.fa3 is not None and self.sparse_on_fa3 and sparse.kept_on_pages and not m.causal:
            table, used = sparse.page_table(name, m.block_table, m.seq_lens, k_cache.shape[1], m.max_seq_len)
            self.fa3(q=q, k=k_cache, v=v_cache, out=out, cu_seqlens_q=m.query_start_loc,
                     max_seqlen_q=m.max_query_len, seqused_k=used, max_seqlen_k=m.max_seq_len,
                     softmax_scale=self.scale, causal=False, block_table=table, fa_version=3)
            lse = None
        elif self._fa3_can_run(sparse, k_cache, m.causal):
            seqs, index = sparse.virtual_sequences(name, m.block_table, k_cache.shape[1],
                                                   self.num_kv_heads, self.num_heads)
            lse = fa3_sparse.varlen_attention(q, k_cache, v_cache, out, seqs, index, self.scale,
                                              self._fa3_v3, return_lse=bool(sparse.compute_masks))
        else:
            lse = None
            if sparse.compute_masks:
                lse = torch.empty(n, self.num_heads, dtype=torch.float32, device=q.device)
            table = sparse.kept_block_table(name, m.block_table, k_cache.shape[1])
            paged_attention(q, k_cache, v_cache, table, m.query_start_loc, m.seq_lens,
                            m.max_query_len, self.scale, m.causal, out=out, query_pos=m.query_pos,
                            blocks=sparse.block_lists(name, m.num_reqs, q.device),
                            tokens=sparse.token_lists(name, m.num_reqs, q.device),
                            lse=lse, num_splits=None, max_seq_len=m.max_seq_len)
        if sparse is not None:
            self._compute_masks(name, sparse, q, k, lse)
            self._select_tokens(name, sparse, q, k, kv_cache, k_cache, m.block_table)
        return output

    def _fa3_can_run(self, sparse: StepSparsity, k_cache, causal: bool) -> bool:
        """FA3 takes steps whose sparse rows all walk SparseD block lists (kept-token lists and
        their composition need our kernel)."""
        if self.fa3 is None or sparse.kept or not self.sparse_on_fa3:
            return False
        if sparse.on_fa3 is None:  # decided at the first layer: all layers' caches share a layout
            page_size = k_cache.shape[1]
            sparse.on_fa3 = all(fa3_sparse.supports(k_cache, page_size, masks.block_size, causal)
                                for masks in sparse.masks.values())
        return sparse.on_fa3

    def _write_kv(self, layer, key, value, k_cache, v_cache, slot_mapping) -> None:
        if key.is_cuda:  # vLLM's cache-write kernel (handles padding slots itself)
            from vllm import _custom_ops as ops

            ops.reshape_and_cache_flash(key, value, k_cache, v_cache, slot_mapping,
                                        self.kv_cache_dtype, layer._k_scale, layer._v_scale)
            return
        n = slot_mapping.shape[0]
        write_kv(key[:n], value[:n], k_cache, v_cache, slot_mapping)

    def _select_tokens(self, layer_name: str, sparse: StepSparsity, q, k, kv_cache, k_cache,
                       block_table) -> None:
        """Eviction step: each selecting row keeps this layer's most attended cached tokens (or
        pages). A full pass scores this step's keys; a dual-cache step (evict_pass="cached")
        scores the keys in the paged cache, this step's block keys already written there. Kept
        pages are then moved onto the request's live pages (the others go back to the pool)."""
        page_size = k_cache.shape[1]
        for row, job in sparse.select_tokens.items():
            qs, qe, kept = job.query_start, job.query_end, job.kept
            start = kept.block_start
            if job.cached_row is None:
                q_block, keys = q[qs + start : qs + start + job.block_length], k[qs:qe]
            else:
                pages = block_table[job.cached_row, : -(-kept.seq_len // page_size)].long()
                q_block = q[qs : qs + job.block_length]
                keys = k_cache[pages].flatten(0, 1)[: kept.seq_len]
            chosen = select_kept_tokens(q_block, keys, start, job.keep_ratio, job.kernel_size,
                                        page_size if job.by_page else None)
            if job.by_page:
                kept.layers[layer_name], kept.pages[layer_name] = chosen
                row_pages = block_table[row, : -(-kept.seq_len // page_size)]
                if job.live is None:  # the same for every layer
                    job.live = torch.tensor(live_pages(kept.seq_len, start, job.block_length, job.keep_ratio,
                                                       page_size), device=row_pages.device)
                kept.physical[layer_name] = compact_kept_pages(kv_cache, row_pages, chosen[1], job.live)
            else:
                kept.layers[layer_name] = chosen

    def _compute_masks(self, layer_name: str, sparse: StepSparsity, q, k, lse) -> None:
        """Switch step: each computing row's block importance (its whole sequence is this step's
        query and key), then its kept key blocks for this layer."""
        for job in sparse.compute_masks.values():
            qs, qe = job.query_start, job.query_end
            q_r, k_r, bs = q[qs:qe], k[qs:qe], job.masks.block_size
            scores = block_scores(q_r, k_r, bs, self.scale, lse=lse[qs:qe])
            generated = None
            if job.prompt_blocks is not None:  # isolated: generated keys under their own softmax
                generated = block_scores(q_r, k_r, bs, self.scale, key_start_block=job.prompt_blocks)
            job.masks.layers[layer_name] = select_key_blocks(scores, job.select, job.prompt_blocks, generated)
