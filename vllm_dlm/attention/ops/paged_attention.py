"""Bidirectional (or causal) attention over vLLM's paged KV cache, batched across requests of
different lengths (Triton). Twin: `reference.paged_attention_reference`.

One program = (query tile of BLOCK_M, query head, request); it walks the request's keys in tiles of
BLOCK_N, gathering them through the block table, with an online softmax in float32. Grouped-query
attention maps query head h to KV head h // (Hq / Hkv).

SparseD: an optional `block_mask` [R, Hq, max_q_blocks, max_k_blocks] (bool) keeps, per head, the
key blocks (of `mask_block` positions) each query block (by absolute position) may attend to; a key
tile no query row of the tile keeps is skipped without loading it.
"""

import torch

from vllm.triton_utils import tl, triton


@triton.jit
def _paged_attention_kernel(
    Q, K_cache, V_cache, Out, block_table, query_start_loc, seq_lens, scale,
    stride_qt, stride_qh, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
    stride_ot, stride_oh, stride_bt, block_mask, stride_mr, stride_mh, stride_mq,
    PAGE_SIZE: tl.constexpr, MASK_BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, FP32_MATH: tl.constexpr,
):
    m_tile = tl.program_id(0)
    head = tl.program_id(1)
    req = tl.program_id(2)
    q_start = tl.load(query_start_loc + req)
    q_len = tl.load(query_start_loc + req + 1) - q_start
    if m_tile * BLOCK_M >= q_len:
        return
    kv_len = tl.load(seq_lens + req)
    kv_head = head // GROUP

    offs_m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_valid = offs_m < q_len
    d_valid = offs_d < HEAD_DIM
    q = tl.load(
        Q + (q_start + offs_m)[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
        mask=m_valid[:, None] & d_valid[None, :], other=0.0,
    )
    if FP32_MATH:
        q = q.to(tl.float32)
    q_pos = kv_len - q_len + offs_m

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    kv_end = kv_len
    if CAUSAL:
        kv_end = tl.minimum(kv_len, kv_len - q_len + (m_tile + 1) * BLOCK_M)
    q_block = q_pos // MASK_BLOCK
    mask_row = block_mask + req * stride_mr + head * stride_mh + q_block * stride_mq
    for start_n in range(0, kv_end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < kv_len
        keep = m_valid  # [BLOCK_M]: rows of this tile that attend to this key tile
        if HAS_MASK:  # BLOCK_N divides MASK_BLOCK: one key block per tile
            keep = keep & (tl.load(mask_row + start_n // MASK_BLOCK, mask=m_valid, other=0) != 0)
        if tl.max(keep.to(tl.int32), 0) > 0:
            m_i, l_i, acc = _attend_tile(
                q, K_cache, V_cache, block_table, req, kv_head, offs_n, n_valid, offs_d, d_valid,
                q_pos, keep, m_i, l_i, acc, scale, stride_kp, stride_ks, stride_kh, stride_vp,
                stride_vs, stride_vh, stride_bt, PAGE_SIZE, CAUSAL, FP32_MATH,
            )
    out = acc / l_i[:, None]
    tl.store(
        Out + (q_start + offs_m)[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
        out.to(Out.dtype.element_ty), mask=m_valid[:, None] & d_valid[None, :],
    )


@triton.jit
def _attend_tile(
    q, K_cache, V_cache, block_table, req, kv_head, offs_n, n_valid, offs_d, d_valid, q_pos, keep,
    m_i, l_i, acc, scale, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
    stride_bt, PAGE_SIZE: tl.constexpr, CAUSAL: tl.constexpr, FP32_MATH: tl.constexpr,
):
    """Online-softmax update of (m_i, l_i, acc) with one key tile; rows not in `keep` are unchanged."""
    page = tl.load(block_table + req * stride_bt + offs_n // PAGE_SIZE, mask=n_valid, other=0)
    page = page.to(tl.int64)  # page * page stride can exceed int32 on large caches
    in_page = offs_n % PAGE_SIZE
    kv_mask = n_valid[:, None] & d_valid[None, :]
    k = tl.load(
        K_cache + page[:, None] * stride_kp + in_page[:, None] * stride_ks
        + kv_head * stride_kh + offs_d[None, :],
        mask=kv_mask, other=0.0,
    )
    if FP32_MATH:  # exact float32 products (no TF32), as the reference computes
        k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
    else:
        s = tl.dot(q, tl.trans(k)) * scale
    valid = n_valid[None, :] & keep[:, None]
    if CAUSAL:
        valid = valid & (offs_n[None, :] <= q_pos[:, None])
    s = tl.where(valid, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # rows with nothing valid in this tile keep m = -inf; guard exp(-inf - -inf)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(s - m_safe[:, None])
    v = tl.load(
        V_cache + page[:, None] * stride_vp + in_page[:, None] * stride_vs
        + kv_head * stride_vh + offs_d[None, :],
        mask=kv_mask, other=0.0,
    )
    if FP32_MATH:
        acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    l_i = l_i * alpha + tl.sum(p, 1)
    m_i = m_new
    return m_i, l_i, acc


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    max_query_len: int,
    scale: float,
    causal: bool = False,
    out: torch.Tensor | None = None,
    block_mask: torch.Tensor | None = None,
    mask_block: int = 128,
) -> torch.Tensor:
    """q [T, Hq, D]; k_cache/v_cache [num_pages, page_size, Hkv, D]; block_table [R, max_pages]
    (int32); query_start_loc [R+1]; seq_lens [R]; block_mask [R, Hq, nQ, nK] bool over blocks of
    `mask_block` positions (None: dense). Returns out [T, Hq, D] (q's dtype)."""
    num_tokens, num_heads, head_dim = q.shape
    num_pages, page_size, num_kv_heads, kv_dim = k_cache.shape
    if kv_dim != head_dim or v_cache.shape != k_cache.shape:
        raise ValueError(f"cache shapes {tuple(k_cache.shape)}/{tuple(v_cache.shape)} do not fit q {tuple(q.shape)}")
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads are not a multiple of {num_kv_heads} KV heads")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("head_dim must be contiguous")
    if out is None:
        out = torch.empty_like(q)
    num_reqs = block_table.shape[0]
    if num_reqs == 0 or num_tokens == 0:
        return out
    on_gpu = q.is_cuda
    block_m = 64 if on_gpu else 16
    block_n = 64 if on_gpu else 16
    if block_mask is not None:
        if mask_block < 16 or mask_block & (mask_block - 1):
            raise ValueError(f"mask_block={mask_block} must be a power of two >= 16")
        block_n = min(block_n, mask_block)
        if block_mask.dim() != 4 or block_mask.shape[:2] != (num_reqs, num_heads):
            raise ValueError(f"block_mask must be [num_reqs, num_heads, nQ, nK], got {tuple(block_mask.shape)}")
        mask_arg = block_mask.to(torch.uint8)
        mask_strides = mask_arg.stride()[:3]
    else:
        mask_arg, mask_strides = block_table, (0, 0, 0)  # never read
    grid = (triton.cdiv(max_query_len, block_m), num_heads, num_reqs)
    _paged_attention_kernel[grid](
        q, k_cache, v_cache, out, block_table, query_start_loc, seq_lens, scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), out.stride(0), out.stride(1),
        block_table.stride(0), mask_arg, *mask_strides,
        PAGE_SIZE=page_size, MASK_BLOCK=mask_block, HAS_MASK=block_mask is not None,
        GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim,
        BLOCK_D=triton.next_power_of_2(head_dim), BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal,
        # float32 inputs, or Triton's CPU interpreter (whose bf16/fp16 dot is not usable).
        FP32_MATH=q.dtype == torch.float32 or not on_gpu,
    )
    return out
