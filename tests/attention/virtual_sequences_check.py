"""SparseD's FA3 path as the engine runs it: the virtual sequences of every layer built once per
step (`StepSparsity.virtual_sequences`) against block-list attention layer by layer, on a random
packed batch with rows of different block sizes and a dense row; shared by the CPU test (torch
twins) and the GPU check (FA3 vs our Triton kernel, benchmarks/bench_attention_kernel.py)."""

import torch

from tests.attention.page_eviction_check import packed_batch
from vllm_dlm.attention.impl import split_kv_cache
from vllm_dlm.attention.ops.fa3_sparse import varlen_attention
from vllm_dlm.attention.sparsity.plan import StepSparsity
from vllm_dlm.attention.sparsity.sparsed import RequestMasks, mask_to_lists, pack_block_lists


def step_with_masks(q_lens, kv_lens, starts, block_sizes, layers, num_heads, g, device="cpu") -> StepSparsity:
    """A step whose rows carry random per-layer masks (block size None: a dense row)."""
    step, qs = StepSparsity(), 0
    for r, (ql, n, s, bs) in enumerate(zip(q_lens, kv_lens, starts, block_sizes)):
        step.rows.append((qs, ql, s, n))
        qs += ql
        if bs is None:
            continue
        masks = step.masks[r] = RequestMasks(bs)
        nb = -(-n // bs)
        for layer in layers:
            mask = torch.rand(num_heads, nb, nb, generator=g, device=device) < 0.4
            masks.layers[layer] = mask_to_lists(mask | torch.eye(nb, dtype=torch.bool, device=device))
    return step


class Batch:
    """A packed batch (q, cache, block table) for `step`'s rows."""

    def __init__(self, q_lens, kv_lens, num_heads, num_kv_heads, head_dim, page_size, g, device, dtype):
        self.q, kv, self.bt, self.qsl, self.seq_lens = packed_batch(
            q_lens, kv_lens, num_heads, num_kv_heads, head_dim, page_size, g, device, dtype)
        self.k_cache, self.v_cache = split_kv_cache(kv, head_dim)
        self.num_heads, self.num_kv_heads, self.page_size = num_heads, num_kv_heads, page_size
        self.scale = head_dim**-0.5


def step_vs_block_lists(step: StepSparsity, batch: Batch, layers, varlen_fn, block_list_attention) -> float:
    """Max |difference| over layers and rows between the step's FA3 path and
    `block_list_attention(q, k_cache, v_cache, bt, qsl, seq_lens, query_pos, blocks | None,
    max_query_len, scale)` run for each row alone (a row's own block size)."""
    b = batch
    starts = torch.tensor([row[2] for row in step.rows], dtype=torch.int32, device=b.q.device)
    max_q = max(row[1] for row in step.rows)
    error = 0.0
    for layer in layers:
        seqs, index = step.virtual_sequences(layer, b.bt, b.page_size, b.num_kv_heads, b.num_heads)
        out = torch.full_like(b.q, float("nan"))
        varlen_attention(b.q, b.k_cache, b.v_cache, out, seqs, index, b.scale, varlen_fn)
        for r in range(len(step.rows)):
            masks = step.masks.get(r)
            blocks = None
            if masks is not None:
                per_row = [masks.layers[layer] if i == r else None for i in range(len(step.rows))]
                blocks = pack_block_lists(per_row, masks.block_size, b.q.device)
            ref = block_list_attention(b.q, b.k_cache, b.v_cache, b.bt, b.qsl, b.seq_lens, starts, blocks,
                                       max_q, b.scale)
            qs, qe = int(b.qsl[r]), int(b.qsl[r + 1])
            error = max(error, float((out[qs:qe].float() - ref[qs:qe].float()).abs().max()))
    return error
