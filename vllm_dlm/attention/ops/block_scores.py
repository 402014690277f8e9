"""SparseD block importance (Triton): for one sequence, per head, the mean of softmax(QK^T * scale)
over each block_size x block_size tile, the softmax taken over the keys from `key_start_block` on
(all keys by default). As in SparseD's code, a partial edge tile is zero-padded to block_size^2
before the mean, so within a query block the ranking is that of the tile sums.
Twin: `reference.block_scores_reference`.

Never materializes the [L, L] attention. The softmax normalizer of each query row is its
log-sum-exp: the switch step's attention kernel already produces it (`paged_attention(lse=...)`),
otherwise `_row_lse` computes it online. `_block_sums` then recomputes each tile's scores and sums
their probabilities; one program owns one (query block, head) row of the result, so the sums are
deterministic (no atomics) and top-k selection on them is reproducible.
"""

import torch

from vllm.triton_utils import tl, triton

LOG2E = 1.4426950408889634


@triton.jit
def _tile_scores(q, K, offs_n, n_valid, kv_head, stride_kt, stride_kh, offs_d, d_valid, qk_scale,
                 FP32_MATH: tl.constexpr):
    """Scaled scores (log2 units) of a query tile against keys offs_n of one sequence."""
    k = tl.load(K + offs_n[:, None] * stride_kt + kv_head * stride_kh + offs_d[None, :],
                mask=n_valid[:, None] & d_valid[None, :], other=0.0)
    if FP32_MATH:
        s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    return s * qk_scale


# Lengths and the log-sum-exp strides vary per request: not specialized on, so that one compile
# (at engine start, `warm_up`) serves every sequence.
@triton.jit(do_not_specialize=["key_start", "seq_len", "stride_lh"])
def _row_lse(Q, K, Lse, key_start, seq_len, qk_scale, stride_qt, stride_qh, stride_kt, stride_kh, stride_lh,
             GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FP32_MATH: tl.constexpr):
    m_tile = tl.program_id(0)
    head = tl.program_id(1)
    offs_m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_valid = offs_m < seq_len
    d_valid = offs_d < HEAD_DIM
    q = tl.load(Q + offs_m[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=m_valid[:, None] & d_valid[None, :], other=0.0)
    if FP32_MATH:
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start_n in range(key_start, seq_len, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < seq_len
        s = _tile_scores(q, K, offs_n, n_valid, head // GROUP, stride_kt, stride_kh, offs_d, d_valid,
                         qk_scale, FP32_MATH)
        s = tl.where(n_valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(s - m_new[:, None]), 1)
        m_i = m_new
    tl.store(Lse + head * stride_lh + offs_m, (m_i + tl.log2(l_i)) / 1.4426950408889634, mask=m_valid)


@triton.jit(do_not_specialize=["seq_len", "first_block", "num_blocks", "stride_lt", "stride_lh", "stride_oh",
                                "stride_oq"])
def _block_sums(Q, K, Lse, Out, seq_len, first_block, num_blocks, qk_scale, stride_qt, stride_qh, stride_kt,
                stride_kh, stride_lt, stride_lh, stride_oh, stride_oq,
                GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr, FP32_MATH: tl.constexpr):
    q_block = tl.program_id(0)
    head = tl.program_id(1)
    SUB: tl.constexpr = BLOCK_SIZE // TILE
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < HEAD_DIM
    out_row = Out + head * stride_oh + q_block * stride_oq
    for sub_m in tl.static_range(SUB):
        offs_m = q_block * BLOCK_SIZE + sub_m * TILE + tl.arange(0, TILE)
        m_valid = offs_m < seq_len
        q = tl.load(Q + offs_m[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                    mask=m_valid[:, None] & d_valid[None, :], other=0.0)
        if FP32_MATH:
            q = q.to(tl.float32)
        lse2 = tl.load(Lse + offs_m * stride_lt + head * stride_lh, mask=m_valid, other=0.0) * 1.4426950408889634
        for k_block in range(first_block, num_blocks):
            total = 0.0
            for sub_n in tl.static_range(SUB):
                offs_n = k_block * BLOCK_SIZE + sub_n * TILE + tl.arange(0, TILE)
                n_valid = offs_n < seq_len
                s = _tile_scores(q, K, offs_n, n_valid, head // GROUP, stride_kt, stride_kh, offs_d,
                                 d_valid, qk_scale, FP32_MATH)
                p = tl.exp2(s - lse2[:, None])
                p = tl.where(m_valid[:, None] & n_valid[None, :], p, 0.0)
                total += tl.sum(tl.sum(p, 1), 0)
            if sub_m == 0:
                tl.store(out_row + k_block - first_block, total)
            else:
                tl.store(out_row + k_block - first_block, tl.load(out_row + k_block - first_block) + total)


def block_scores(q: torch.Tensor, k: torch.Tensor, block_size: int, scale: float,
                 lse: torch.Tensor | None = None, key_start_block: int = 0) -> torch.Tensor:
    """q [L, Hq, D], k [L, Hkv, D] of one sequence (all its positions) -> importance
    [Hq, nB, nB - key_start_block] float32 (nB = ceil(L / block_size)) of the key blocks from
    key_start_block on, under the softmax over those keys. lse [L, Hq]: each query row's natural
    log-sum-exp of q.k * scale over those keys, if already known (the attention kernel's)."""
    seq_len, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    if k.shape[0] != seq_len or k.shape[2] != head_dim or num_heads % num_kv_heads:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} do not fit")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")
    n = triton.cdiv(seq_len, block_size)
    if not 0 <= key_start_block < n:
        raise ValueError(f"key_start_block={key_start_block} outside [0, {n})")
    on_gpu = q.is_cuda
    common = dict(GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim,
                  BLOCK_D=triton.next_power_of_2(head_dim),
                  FP32_MATH=q.dtype == torch.float32 or not on_gpu)
    if lse is None:
        lse = torch.empty(num_heads, seq_len, dtype=torch.float32, device=q.device).t()
        tile = 64 if on_gpu else 16
        _row_lse[(triton.cdiv(seq_len, tile), num_heads)](
            q, k, lse, key_start_block * block_size, seq_len, scale * LOG2E, q.stride(0), q.stride(1),
            k.stride(0), k.stride(1), lse.stride(1), BLOCK_M=tile, BLOCK_N=tile, num_warps=4, **common,
        )
    elif lse.shape != (seq_len, num_heads):
        raise ValueError(f"lse must be [{seq_len}, {num_heads}], got {tuple(lse.shape)}")
    sums = torch.empty(num_heads, n, n - key_start_block, dtype=torch.float32, device=q.device)
    tile = min(block_size, 128 if on_gpu else 64)
    _block_sums[(n, num_heads)](
        q, k, lse, sums, seq_len, key_start_block, n, scale * LOG2E, q.stride(0), q.stride(1),
        k.stride(0), k.stride(1), lse.stride(0), lse.stride(1), sums.stride(0), sums.stride(1),
        BLOCK_SIZE=block_size, TILE=tile, num_warps=8 if tile >= 128 else 4, **common,
    )
    return sums / (block_size * block_size)


def warm_up(num_heads: int, num_kv_heads: int, head_dim: int, block_size: int, dtype, device) -> None:
    """Compile both kernels for one model shape and block size as the switch step calls them (with
    the attention's log-sum-exp, laid out [L, Hq] over a head-major buffer as FlashAttention returns
    it, and for isolated selection without it): otherwise the first request to reach its switch
    step pays the compile (~2 s on the H200) and stalls the batch."""
    n = 2 * block_size + 1
    q = torch.zeros(n, num_heads, head_dim, dtype=dtype, device=device)
    k = torch.zeros(n, num_kv_heads, head_dim, dtype=dtype, device=device)
    lse = torch.zeros(num_heads, n, dtype=torch.float32, device=device).t()
    block_scores(q, k, block_size, 1.0, lse=lse)
    block_scores(q, k, block_size, 1.0, key_start_block=1)
