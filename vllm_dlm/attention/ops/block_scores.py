"""SparseD block importance (Triton): for one sequence, per head, the mean of softmax(QK^T * scale)
over each block_size x block_size tile, softmax taken over all keys (bidirectional).
Twin: `reference.block_scores_reference`.

Two passes, never materializing the [L, L] attention: `_row_stats` computes each query row's softmax
max and normalizer online; `_tile_sums` recomputes each tile's scores and sums their probabilities.
"""

import torch

from vllm.triton_utils import tl, triton


@triton.jit
def _row_stats(Q, K, M, Lsum, seq_len, scale, stride_qt, stride_qh, stride_kt, stride_kh, stride_mh,
               GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    m_tile = tl.program_id(0)
    head = tl.program_id(1)
    offs_m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_valid = offs_m < seq_len
    d_valid = offs_d < HEAD_DIM
    q = tl.load(Q + offs_m[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=m_valid[:, None] & d_valid[None, :], other=0.0).to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start_n in range(0, seq_len, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_valid = offs_n < seq_len
        k = tl.load(K + offs_n[:, None] * stride_kt + (head // GROUP) * stride_kh + offs_d[None, :],
                    mask=n_valid[:, None] & d_valid[None, :], other=0.0).to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        s = tl.where(n_valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(s - m_new[:, None]), 1)
        m_i = m_new
    tl.store(M + head * stride_mh + offs_m, m_i, mask=m_valid)
    tl.store(Lsum + head * stride_mh + offs_m, l_i, mask=m_valid)


@triton.jit
def _tile_sums(Q, K, M, Lsum, Out, seq_len, scale, stride_qt, stride_qh, stride_kt, stride_kh,
               stride_mh, stride_oh, stride_oq, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
               BLOCK_D: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    q_block = tl.program_id(0)
    k_block = tl.program_id(1)
    head = tl.program_id(2)
    offs_m = q_block * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    offs_n = k_block * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    offs_d = tl.arange(0, BLOCK_D)
    m_valid = offs_m < seq_len
    n_valid = offs_n < seq_len
    d_valid = offs_d < HEAD_DIM
    q = tl.load(Q + offs_m[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=m_valid[:, None] & d_valid[None, :], other=0.0).to(tl.float32)
    k = tl.load(K + offs_n[:, None] * stride_kt + (head // GROUP) * stride_kh + offs_d[None, :],
                mask=n_valid[:, None] & d_valid[None, :], other=0.0).to(tl.float32)
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
    m = tl.load(M + head * stride_mh + offs_m, mask=m_valid, other=0.0)
    l = tl.load(Lsum + head * stride_mh + offs_m, mask=m_valid, other=1.0)
    p = tl.exp(s - m[:, None]) / l[:, None]
    p = tl.where(m_valid[:, None] & n_valid[None, :], p, 0.0)
    count = tl.sum(m_valid.to(tl.float32), 0) * tl.sum(n_valid.to(tl.float32), 0)
    tl.store(Out + head * stride_oh + q_block * stride_oq + k_block, tl.sum(tl.sum(p, 1), 0) / count)


def block_scores(q: torch.Tensor, k: torch.Tensor, block_size: int, scale: float) -> torch.Tensor:
    """q [L, Hq, D], k [L, Hkv, D] of one sequence -> importance [Hq, nB, nB] float32,
    nB = ceil(L / block_size); partial edge tiles are averaged over their valid entries."""
    seq_len, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    if k.shape[0] != seq_len or k.shape[2] != head_dim or num_heads % num_kv_heads:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} do not fit")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")
    n = triton.cdiv(seq_len, block_size)
    stats = torch.empty(2, num_heads, seq_len, dtype=torch.float32, device=q.device)
    out = torch.empty(num_heads, n, n, dtype=torch.float32, device=q.device)
    block_d = triton.next_power_of_2(head_dim)
    common = dict(GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_D=block_d)
    tile = 64 if q.is_cuda else 16
    _row_stats[(triton.cdiv(seq_len, tile), num_heads)](
        q, k, stats[0], stats[1], seq_len, scale, q.stride(0), q.stride(1), k.stride(0),
        k.stride(1), stats.stride(1), BLOCK_M=tile, BLOCK_N=tile, **common,
    )
    _tile_sums[(n, n, num_heads)](
        q, k, stats[0], stats[1], out, seq_len, scale, q.stride(0), q.stride(1), k.stride(0),
        k.stride(1), stats.stride(1), out.stride(0), out.stride(1), BLOCK_SIZE=block_size, **common,
    )
    return out
