"""Paged attention for `sparsed` (Triton): dense, SparseD key-block lists, Sparse-dLLM kept-token
lists, optional split-KV. Twin: `reference.paged_attention_reference`.

Layout: q [T, Hq, D]; K/V caches [num_pages, page_size, Hkv, D] (views of vLLM's packed cache).
Request r's queries are tokens qsl[r]:qsl[r+1], at absolute positions query_pos[r], +1, ...; they
attend to the request's keys at positions [0, seq_lens[r]), gathered through block_table[r].
(`query_pos` is explicit because a dual-cache step's keys extend past its queries.)

One program = (query tile, query head, request x KV split). Query tiles are aligned to absolute
positions in multiples of BLOCK_M, so every tile lies inside one SparseD query block and all its
rows share one list of key tiles. Per request, the key tiles come from:
  dense        every tile of [0, seq_len)
  block list   SparseD: the kept key blocks (of `mask_block` positions) of this (head, query block)
  token list   Sparse-dLLM: the kept key positions of this layer, shared by all heads
The loop over key tiles has no data-dependent branch, so Triton can pipeline its loads. With
`num_splits` > 1 each split walks a slice of the tiles and writes a partial result (output, log-sum-
exp) that `_merge_splits` combines (flash-decoding, for short queries against long caches).
"""

import os
from dataclasses import dataclass

import torch

from vllm.triton_utils import tl, triton

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class KernelConfig:
    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2


@dataclass
class BlockLists:
    """SparseD masks of the requests in a batch, as kept key-block lists.

    blocks: flat int32; request r's part (at meta[r, 0]) is [Hq, nQ, kmax], kept key-block ids of
            each (head, query block) in ascending order (unused tail: any value).
    counts: flat int32; request r's part (at meta[r, 1]) is [Hq, nQ], how many of `blocks` count.
    meta:   [R, 4] int64 (blocks offset, counts offset, nQ, kmax); offset -1: the row is dense.
    block_size: positions per block (a power of two >= 16), query and key blocks alike.
    """

    blocks: torch.Tensor
    counts: torch.Tensor
    meta: torch.Tensor
    block_size: int


@dataclass
class TokenLists:
    """Kept key positions (Sparse-dLLM eviction) of the requests in a batch, shared by all heads.

    tokens: flat int32 key positions (< seq_len), ascending per request.
    meta:   [R, 2] int64 (offset, count); offset -1: the row attends to all its keys.
    bits:   optional SparseD masks on top (composition): flat uint8; request r's part (at
            bits_meta[r, 0]) is [Hq, n_rows, nK], keep bits of query blocks bits_meta[r, 1] ..
            + n_rows - 1 (n_rows = bits_meta[r, 2], nK = bits_meta[r, 3]) over blocks of
            `bits_block_size` positions; offset -1: no SparseD mask for the row.
    """

    tokens: torch.Tensor
    meta: torch.Tensor
    bits: torch.Tensor | None = None
    bits_meta: torch.Tensor | None = None
    bits_block_size: int = 128


def _env_config(name: str) -> KernelConfig | None:
    """`VLLM_DLM_ATTN_CONFIG` (full passes) / `VLLM_DLM_ATTN_DECODE_CONFIG` (short queries) =
    "block_m,block_n,num_warps,num_stages" override the tiles (benchmarks sweep them)."""
    text = os.environ.get(name)
    if not text:
        return None
    bm, bn, w, s = (int(x) for x in text.split(","))
    return KernelConfig(bm, bn, w, s)


def default_config(max_query_len: int, head_dim: int, on_gpu: bool) -> KernelConfig:
    """Tiles measured on H200 (benchmarks/results/attention_kernel_h200*.json)."""
    if not on_gpu:
        return KernelConfig(16, 16)
    if max_query_len >= 128:
        return _env_config("VLLM_DLM_ATTN_CONFIG") or KernelConfig(128, 32, num_warps=4, num_stages=3)
    block_m = 16 if max_query_len <= 16 else (32 if max_query_len <= 32 else 64)
    return _env_config("VLLM_DLM_ATTN_DECODE_CONFIG") or KernelConfig(block_m, 64, num_warps=4, num_stages=2)


@triton.jit
def _attention_kernel(
    Q, K_cache, V_cache, Out, Lse, block_table, query_start_loc, query_pos, seq_lens, qk_scale,
    blk_list, blk_count, blk_meta, tok_list, tok_meta, tok_bits, bits_meta, num_splits,
    stride_qt, stride_qh, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
    stride_os, stride_ot, stride_oh, stride_ls, stride_lt, stride_bt,
    PAGE_SIZE: tl.constexpr, MASK_BLOCK: tl.constexpr, HAS_BLOCKS: tl.constexpr,
    HAS_TOKENS: tl.constexpr, HAS_BITS: tl.constexpr, BITS_BLOCK: tl.constexpr,
    STORE_LSE: tl.constexpr, GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, FP32_MATH: tl.constexpr,
):
    tile = tl.program_id(0)
    head = tl.program_id(1)
    req = tl.program_id(2) // num_splits
    split = tl.program_id(2) % num_splits
    q_start = tl.load(query_start_loc + req)
    q_len = tl.load(query_start_loc + req + 1) - q_start
    pos0 = tl.load(query_pos + req)
    tile_pos = (pos0 // BLOCK_M + tile) * BLOCK_M
    if tile_pos >= pos0 + q_len:
        return
    kv_len = tl.load(seq_lens + req)
    kv_head = head // GROUP

    offs_m = tile_pos + tl.arange(0, BLOCK_M)  # absolute query positions
    offs_d = tl.arange(0, BLOCK_D)
    m_valid = (offs_m >= pos0) & (offs_m < pos0 + q_len)
    d_valid = offs_d < HEAD_DIM
    rows = q_start + offs_m - pos0
    q = tl.load(Q + rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=m_valid[:, None] & d_valid[None, :], other=0.0)
    if FP32_MATH:
        q = q.to(tl.float32)

    # The request's key tiles: dense by default, else from its block or token list.
    kv_end = kv_len
    if CAUSAL:
        kv_end = tl.minimum(kv_len, tile_pos + BLOCK_M)
    n_iter = tl.cdiv(kv_end, BLOCK_N)
    SUB: tl.constexpr = MASK_BLOCK // BLOCK_N
    use_blocks = False
    list_base = 0
    if HAS_BLOCKS:
        b_off = tl.load(blk_meta + req * 4)
        use_blocks = b_off >= 0
        block_row = head * tl.load(blk_meta + req * 4 + 2) + tile_pos // MASK_BLOCK
        count = tl.load(blk_count + tl.maximum(tl.load(blk_meta + req * 4 + 1), 0) + block_row,
                        mask=use_blocks, other=0).to(tl.int32)
        list_base = tl.maximum(b_off, 0) + block_row * tl.load(blk_meta + req * 4 + 3)
        n_iter = tl.where(use_blocks, count * SUB, n_iter)
    use_tokens = False
    tok_base = 0
    tok_count = 0
    if HAS_TOKENS:
        t_off = tl.load(tok_meta + req * 2)
        use_tokens = t_off >= 0
        tok_base = tl.maximum(t_off, 0)
        tok_count = tl.load(tok_meta + req * 2 + 1).to(tl.int32)
        n_iter = tl.where(use_tokens, tl.cdiv(tok_count, BLOCK_N), n_iter)
    use_bits = False
    bits_row = 0
    if HAS_BITS:  # SparseD keep bits of this tile's query block, over the listed positions
        bits_off = tl.load(bits_meta + req * 4)
        use_bits = use_tokens & (bits_off >= 0)
        q_row = tile_pos // BITS_BLOCK - tl.load(bits_meta + req * 4 + 1)
        bits_row = (tl.maximum(bits_off, 0) + (head * tl.load(bits_meta + req * 4 + 2) + q_row)
                    * tl.load(bits_meta + req * 4 + 3))
    per_split = tl.cdiv(n_iter, num_splits)
    it_lo = split * per_split
    it_hi = tl.minimum(n_iter, it_lo + per_split)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    arange_n = tl.arange(0, BLOCK_N)
    for it in range(it_lo, it_hi):
        start_n = it * BLOCK_N
        if HAS_BLOCKS:
            kb = tl.load(blk_list + list_base + it // SUB, mask=use_blocks, other=0)
            start_n = tl.where(use_blocks, kb * MASK_BLOCK + (it % SUB) * BLOCK_N, start_n)
        offs_n = start_n + arange_n
        n_valid = offs_n < kv_len
        if HAS_TOKENS:
            idx = it * BLOCK_N + arange_n
            in_list = use_tokens & (idx < tok_count)
            pos = tl.load(tok_list + tok_base + idx, mask=in_list, other=0)
            offs_n = tl.where(use_tokens, pos, offs_n)
            n_valid = tl.where(use_tokens, in_list, n_valid)
            if HAS_BITS:
                bit = tl.load(tok_bits + bits_row + pos // BITS_BLOCK, mask=use_bits & in_list, other=1)
                n_valid = n_valid & (bit != 0)
        page = tl.load(block_table + req * stride_bt + offs_n // PAGE_SIZE, mask=n_valid, other=0)
        page = page.to(tl.int64)  # page * page stride can exceed int32 on large caches
        in_page = offs_n % PAGE_SIZE
        kv_mask = n_valid[:, None] & d_valid[None, :]
        k = tl.load(K_cache + page[:, None] * stride_kp + in_page[:, None] * stride_ks
                    + kv_head * stride_kh + offs_d[None, :], mask=kv_mask, other=0.0)
        if FP32_MATH:  # exact float32 products (no TF32), as the reference computes
            s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee") * qk_scale
        else:
            s = tl.dot(q, tl.trans(k)) * qk_scale
        valid = n_valid[None, :]
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no valid key yet
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        v = tl.load(V_cache + page[:, None] * stride_vp + in_page[:, None] * stride_vs
                    + kv_head * stride_vh + offs_d[None, :], mask=kv_mask, other=0.0)
        if FP32_MATH:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new

    out = acc / tl.maximum(l_i, 1e-30)[:, None]  # a split with no key for a row: 0, weight 0
    tl.store(Out + split * stride_os + rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=m_valid[:, None] & d_valid[None, :])
    if STORE_LSE:  # natural log-sum-exp of the scaled scores
        lse = (m_i + tl.log2(l_i)) / 1.4426950408889634
        tl.store(Lse + split * stride_ls + rows * stride_lt + head, lse, mask=m_valid)


def auto_num_splits(num_programs: int, max_seq_len: int, block_n: int, device) -> int:
    """Split-KV factor that fills the GPU when few (query tile, head, request) programs each walk
    a long cache: `VLLM_DLM_SPLIT_WAVES` (default 4) programs per SM, each split keeping >= 4 key
    tiles."""
    if device.type != "cuda":
        return 1
    num_sms = _num_sms(device.index or 0)
    waves = int(os.environ.get("VLLM_DLM_SPLIT_WAVES", "4"))
    if num_programs >= waves * num_sms:
        return 1
    return max(1, min(triton.cdiv(waves * num_sms, num_programs), triton.cdiv(max_seq_len, 4 * block_n), 128))


_SMS: dict[int, int] = {}


def _num_sms(index: int) -> int:
    if index not in _SMS:
        _SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SMS[index]


def _merge_splits(part_out: torch.Tensor, part_lse: torch.Tensor, out: torch.Tensor) -> None:
    """[S, T, H, D] partial outputs with their [S, T, H] log-sum-exps -> out [T, H, D]."""
    lse_max = part_lse.max(dim=0).values
    weights = torch.exp(part_lse - lse_max)
    merged = (weights[..., None] * part_out).sum(0) / weights.sum(0)[..., None]
    out.copy_(merged.to(out.dtype))


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
    query_pos: torch.Tensor | None = None,
    blocks: BlockLists | None = None,
    tokens: TokenLists | None = None,
    lse: torch.Tensor | None = None,
    num_splits: int | None = 1,
    config: KernelConfig | None = None,
    max_seq_len: int | None = None,
) -> torch.Tensor:
    """q [T, Hq, D]; k_cache/v_cache [num_pages, page_size, Hkv, D]; block_table [R, max_pages]
    int32; query_start_loc [R+1]; seq_lens [R]; query_pos [R] absolute position of each request's
    first query (default seq_lens - query lengths). `blocks` / `tokens`: which keys each request
    keeps (None: all). `lse` [T, Hq] float32, if given, receives the log-sum-exp of each row's
    scaled scores (num_splits must be 1). num_splits None: chosen from the batch shape and
    max_seq_len (the longest seq_lens entry). Returns out [T, Hq, D] (q's dtype)."""
    num_tokens, num_heads, head_dim = q.shape
    num_pages, page_size, num_kv_heads, kv_dim = k_cache.shape
    if kv_dim != head_dim or v_cache.shape != k_cache.shape:
        raise ValueError(f"cache shapes {tuple(k_cache.shape)}/{tuple(v_cache.shape)} do not fit q {tuple(q.shape)}")
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads are not a multiple of {num_kv_heads} KV heads")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("head_dim must be contiguous")
    if lse is not None and num_splits not in (1, None):
        raise ValueError("lse needs num_splits == 1")
    if out is None:
        out = torch.empty_like(q)
    num_reqs = block_table.shape[0]
    if num_reqs == 0 or num_tokens == 0:
        return out
    if query_pos is None:
        query_pos = seq_lens - (query_start_loc[1:] - query_start_loc[:-1])
    on_gpu = q.is_cuda
    cfg = config or default_config(max_query_len, head_dim, on_gpu)
    block_m, block_n = cfg.block_m, cfg.block_n
    mask_block = block_n
    if blocks is not None:
        mask_block = blocks.block_size
        if mask_block < 16 or mask_block & (mask_block - 1):
            raise ValueError(f"mask block_size={mask_block} must be a power of two >= 16")
        if blocks.meta.shape != (num_reqs, 4):
            raise ValueError(f"blocks.meta must be [{num_reqs}, 4], got {tuple(blocks.meta.shape)}")
        block_m, block_n = min(block_m, mask_block), min(block_n, mask_block)
    has_bits = tokens is not None and tokens.bits is not None
    if tokens is not None and tokens.meta.shape != (num_reqs, 2):
        raise ValueError(f"tokens.meta must be [{num_reqs}, 2], got {tuple(tokens.meta.shape)}")
    if has_bits:
        block_m = min(block_m, tokens.bits_block_size)  # a tile stays inside one query block
    unused = block_table  # pointer arguments of disabled features (never read)
    q_tiles = triton.cdiv(max_query_len, block_m) + 1  # a first tile may start before the queries
    if num_splits is None:
        num_splits = 1
        if lse is None and max_seq_len is not None:
            num_splits = auto_num_splits(q_tiles * num_heads * num_reqs, max_seq_len, block_n, q.device)

    if num_splits > 1:
        target = torch.empty(num_splits, *q.shape, dtype=torch.float32, device=q.device)
        lse_target = torch.empty(num_splits, num_tokens, num_heads, dtype=torch.float32, device=q.device)
    else:
        target, lse_target = out[None], (lse[None] if lse is not None else None)
    lse_arg = lse_target if lse_target is not None else unused
    lse_strides = lse_target.stride()[:2] if lse_target is not None else (0, 0)
    grid = (q_tiles, num_heads, num_reqs * num_splits)
    _attention_kernel[grid](
        q, k_cache, v_cache, target, lse_arg, block_table, query_start_loc, query_pos, seq_lens,
        scale * LOG2E,
        blocks.blocks if blocks is not None else unused,
        blocks.counts if blocks is not None else unused,
        blocks.meta if blocks is not None else unused,
        tokens.tokens if tokens is not None else unused,
        tokens.meta if tokens is not None else unused,
        tokens.bits if has_bits else unused,
        tokens.bits_meta if has_bits else unused,
        num_splits,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        target.stride(0), target.stride(1), target.stride(2), *lse_strides, block_table.stride(0),
        PAGE_SIZE=page_size, MASK_BLOCK=mask_block, HAS_BLOCKS=blocks is not None,
        HAS_TOKENS=tokens is not None, HAS_BITS=has_bits,
        BITS_BLOCK=tokens.bits_block_size if has_bits else 16, STORE_LSE=lse_target is not None,
        GROUP=num_heads // num_kv_heads, HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim),
        BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal,
        # float32 inputs, or Triton's CPU interpreter (whose bf16/fp16 dot is not usable).
        FP32_MATH=q.dtype == torch.float32 or not on_gpu,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if num_splits > 1:
        _merge_splits(target, lse_target, out)
    return out
