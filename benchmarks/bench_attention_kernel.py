"""The `sparsed` kernels against FlashAttention-3 on one LLaDA-8B layer (32 heads, head_dim 128,
bf16, paged KV with 16-token pages), GPU only:

  full     full-sequence step (cache none): FA3 dense vs our kernel dense vs SparseD block lists
           (block 128, per-head lists as `select`/isolated would keep) run by our kernel (several
           tile configs; the best is written to best_config.txt) and by FA3 over per-(head, query
           block) virtual sequences (`ops.fa3_sparse`, what the backend uses on Hopper)
  scores   the switch step's extra work: block importance from the attention's log-sum-exp
  cached   a 32-query block against a long cache (dual-cache step): FA3 vs ours with split-KV,
           dense and keeping a fraction of the cached tokens (Sparse-dLLM eviction), sweeping tiles
           and split waves (best written to best_decode.txt as "config;waves")

Also checks our kernel against its torch reference on the GPU first. Prints a table, writes
<out>/attention_kernel_<tag>.json (plot: benchmarks/plot.py).
"""

import argparse
import json
import os
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
HEADS, DIM, PAGE, BLOCK = 32, 128, 16, 128
CONFIGS = [(128, 32, 4, 3), (128, 32, 4, 4), (128, 64, 4, 3), (128, 128, 8, 2)]
DECODE_CONFIGS = [(32, 64, 4, 2), (32, 64, 4, 3), (32, 128, 4, 2), (32, 32, 4, 4)]


def time_ms(fn, iters=5) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def paged_cache(n, device="cuda"):
    """Packed vLLM cache [pages, H, page, 2D] with one request's n tokens in shuffled pages."""
    pages = -(-n // PAGE)
    kv = torch.randn(pages, HEADS, PAGE, 2 * DIM, device=device, dtype=torch.bfloat16)
    k_cache, v_cache = kv.transpose(1, 2).split(DIM, dim=-1)
    block_table = torch.randperm(pages, device=device, dtype=torch.int32)[None]
    return kv, k_cache, v_cache, block_table


def sparsed_lists(n, select, device="cuda"):
    """Random per-head lists with SparseD's isolated budget: k(nP) prompt + k(nG) generated blocks."""
    from vllm_dlm.attention.sparsity.sparsed import num_kept, pack_block_lists

    nb = -(-n // BLOCK)
    prompt = nb - 2
    k_p, k_g = num_kept(nb, select), num_kept(2, select)
    scores = torch.rand(HEADS, nb, nb, device=device)
    top = scores[..., :prompt].topk(min(k_p, prompt), dim=-1).indices
    gen = torch.arange(prompt, prompt + k_g, device=device).expand(HEADS, nb, k_g)
    blocks = torch.cat([top, gen], -1).sort(-1).values.int().contiguous()
    counts = torch.full((HEADS, nb), blocks.shape[-1], dtype=torch.int32, device=device)
    return pack_block_lists([(blocks, counts)], BLOCK, device), blocks.shape[-1] / nb, (blocks, counts)


def check_correctness():
    from vllm_dlm.attention.ops.paged_attention import paged_attention
    from vllm_dlm.attention.ops.reference import paged_attention_reference, random_paged_batch
    from vllm_dlm.attention.sparsity.sparsed import mask_to_lists, pack_block_lists

    checks = []
    for dtype, tol in ((torch.float32, 2e-4), (torch.bfloat16, 3e-2)):
        q_lens, kv_lens = [300, 32, 129], [300, 700, 129]
        q, kc, vc, bt, qsl, sl = random_paged_batch(q_lens, kv_lens, 8, 2, 128, 16, dtype, "cuda")
        qpos = torch.tensor([0, 333, 0], dtype=torch.int32, device="cuda")
        masks = [torch.rand(8, 3, 3, device="cuda") < 0.5, None, torch.rand(8, 2, 2, device="cuda") < 0.5]
        masks = [None if m is None else m | torch.eye(m.shape[-1], dtype=torch.bool, device="cuda") for m in masks]
        blocks = pack_block_lists([None if m is None else mask_to_lists(m) for m in masks], 128, "cuda")
        for name, kwargs in (("dense", {}), ("blocks", {"blocks": blocks}), ("split4", {"num_splits": 4})):
            out = paged_attention(q, kc, vc, bt, qsl, sl, 300, 128**-0.5, query_pos=qpos, **kwargs)
            ref = paged_attention_reference(q.cpu(), kc.cpu(), vc.cpu(), bt.cpu(), qsl.cpu(), sl.cpu(),
                                            128**-0.5, query_pos=qpos.cpu(),
                                            blocks=kwargs.get("blocks") and _to_cpu(blocks))
            err = (out.float().cpu() - ref.float()).abs().max().item()
            checks.append({"dtype": str(dtype), "mode": name, "max_abs_err": err, "ok": err < tol})
            print(f"correctness {dtype} {name}: max abs err {err:.2e} ({'ok' if err < tol else 'FAIL'})", flush=True)
    checks.append(check_fa3_virtual())
    checks.append(check_step_virtual_sequences())
    return checks


def check_step_virtual_sequences():
    """The engine's SparseD path on FA3 (virtual sequences of all layers built once per step) vs our
    Triton kernel on each row's block lists, bf16 (tests/attention/virtual_sequences_check.py)."""
    import functools

    from vllm.vllm_flash_attn import flash_attn_varlen_func

    from tests.attention.virtual_sequences_check import Batch, step_vs_block_lists, step_with_masks
    from vllm_dlm.attention.ops.paged_attention import paged_attention

    def block_lists(q, k_cache, v_cache, bt, qsl, seq_lens, query_pos, blocks, max_q, scale):
        return paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, max_q, scale, query_pos=query_pos,
                               blocks=blocks)

    g = torch.Generator(device="cuda").manual_seed(0)
    q_lens, kv_lens, starts = [32, 32, 700, 32], [1312, 2000, 700, 4100], [1024, 300, 0, 3968]
    layers = [f"layer{i}" for i in range(4)]
    batch = Batch(q_lens, kv_lens, HEADS, HEADS, DIM, PAGE, g, "cuda", torch.bfloat16)
    step = step_with_masks(q_lens, kv_lens, starts, [BLOCK, None, BLOCK, 2 * BLOCK], layers, HEADS, g, "cuda")
    err = step_vs_block_lists(step, batch, layers, functools.partial(flash_attn_varlen_func, fa_version=3),
                              block_lists)
    ok = err < 3e-2
    print(f"correctness bf16 fa3 step virtual sequences (4 layers at once): max abs err {err:.2e} "
          f"({'ok' if ok else 'FAIL'})", flush=True)
    return {"dtype": "torch.bfloat16", "mode": "fa3_step_virtual", "max_abs_err": err, "ok": ok}


def check_fa3_virtual():
    """SparseD through FA3 virtual sequences vs the reference, on the packed (HND) cache."""
    import functools

    from vllm.vllm_flash_attn import flash_attn_varlen_func

    from vllm_dlm.attention.ops.fa3_sparse import RowInfo, sparse_varlen_attention
    from vllm_dlm.attention.ops.reference import paged_attention_reference
    from vllm_dlm.attention.sparsity.sparsed import mask_to_lists, pack_block_lists

    n, dense_n = 700, 300
    kv, k_cache, v_cache, bt = paged_cache(n + dense_n)
    p0 = -(-n // PAGE)
    rest = bt[0, p0:]  # the second request's pages, padded to the same width
    bt = torch.stack([bt[0, :p0], torch.cat([rest, rest[:1].expand(p0 - rest.numel())])])
    q = torch.randn(n + 32, HEADS, DIM, device="cuda", dtype=torch.bfloat16)
    mask = (torch.rand(HEADS, 6, 6, device="cuda") < 0.4) | torch.eye(6, dtype=torch.bool, device="cuda")
    lists = mask_to_lists(mask)
    rows = [RowInfo(0, n, 0, n, lists, BLOCK), RowInfo(n, 32, 200, dense_n, None)]
    out = torch.zeros_like(q)
    sparse_varlen_attention(q, k_cache, v_cache, out, bt, rows, DIM**-0.5,
                            functools.partial(flash_attn_varlen_func, fa_version=3))
    blocks = pack_block_lists([lists, None], BLOCK, "cpu")
    blocks.blocks, blocks.counts = blocks.blocks.cpu(), blocks.counts.cpu()
    qsl = torch.tensor([0, n, n + 32], dtype=torch.int32)
    ref = paged_attention_reference(q.cpu(), k_cache.cpu(), v_cache.cpu(), bt.cpu(), qsl,
                                    torch.tensor([n, dense_n]), DIM**-0.5,
                                    query_pos=torch.tensor([0, 200]), blocks=blocks)
    err = (out.float().cpu() - ref.float()).abs().max().item()
    print(f"correctness bf16 fa3 virtual sequences: max abs err {err:.2e} ({'ok' if err < 3e-2 else 'FAIL'})", flush=True)
    return {"dtype": "torch.bfloat16", "mode": "fa3_virtual", "max_abs_err": err, "ok": err < 3e-2}


def _to_cpu(blocks):
    from vllm_dlm.attention.ops.paged_attention import BlockLists

    return BlockLists(blocks.blocks.cpu(), blocks.counts.cpu(), blocks.meta.cpu(), blocks.block_size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[4096, 16384, 32768, 65536])
    parser.add_argument("--select", type=float, default=0.3)
    parser.add_argument("--keep", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument("--checks-only", action="store_true", help="the GPU correctness checks, no timings")
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    from vllm.vllm_flash_attn import flash_attn_varlen_func

    import functools

    from vllm_dlm.attention.ops.block_scores import block_scores
    from vllm_dlm.attention.ops.fa3_sparse import RowInfo, sparse_varlen_attention
    from vllm_dlm.attention.ops.paged_attention import KernelConfig, TokenLists, auto_num_splits, paged_attention

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"device": torch.cuda.get_device_name(), "checks": check_correctness(),
              "full": [], "scores": [], "cached": []}
    path = out_dir / f"attention_kernel_{args.tag}.json"
    if args.checks_only:
        path.write_text(json.dumps(record, indent=1))
        return
    scale = DIM**-0.5

    def fa3(q, k_cache, v_cache, bt, cu, seq_lens, max_q, max_k):
        return flash_attn_varlen_func(q, k_cache, v_cache, max_seqlen_q=max_q, cu_seqlens_q=cu,
                                      max_seqlen_k=max_k, seqused_k=seq_lens, softmax_scale=scale,
                                      causal=False, block_table=bt, fa_version=3)

    best, decode_best = {}, {}
    for n in args.seq:
        kv, k_cache, v_cache, bt = paged_cache(n)
        q = torch.randn(n, HEADS, DIM, device="cuda", dtype=torch.bfloat16)
        cu = torch.tensor([0, n], device="cuda", dtype=torch.int32)
        seq_lens = torch.tensor([n], device="cuda", dtype=torch.int32)
        flops = 4 * n * n * HEADS * DIM
        iters = 3 if n > 20000 else 10
        fa = time_ms(lambda: fa3(q, k_cache, v_cache, bt, cu, seq_lens, n, n), iters)
        dense = time_ms(lambda: paged_attention(q, k_cache, v_cache, bt, cu, seq_lens, n, scale), iters)
        blocks, density, lists = sparsed_lists(n, args.select)
        rows = [RowInfo(0, n, 0, n, lists, BLOCK)]
        fa3_fn = functools.partial(flash_attn_varlen_func, fa_version=3)
        out_v = torch.empty_like(q)
        virtual = time_ms(lambda: sparse_varlen_attention(q, k_cache, v_cache, out_v, bt, rows, scale, fa3_fn), iters)
        out_t = paged_attention(q, k_cache, v_cache, bt, cu, seq_lens, n, scale, blocks=blocks)
        virtual_err = (out_v.float() - out_t.float()).abs().max().item()
        sparse = {}
        for cfg in CONFIGS:
            kc = KernelConfig(*cfg)
            try:
                sparse[cfg] = time_ms(lambda: paged_attention(q, k_cache, v_cache, bt, cu, seq_lens, n, scale,
                                                              blocks=blocks, config=kc), iters)
            except Exception as e:  # a config the compiler rejects (shared memory): skip it
                print(f"config {cfg}: {type(e).__name__}: {str(e)[:120]}", flush=True)
        cfg_best = min(sparse, key=sparse.get)
        best[n] = cfg_best
        row = {"seq": n, "density": density, "fa3_ms": fa, "dense_ms": dense,
               "sparse_ms": sparse[cfg_best], "best_config": list(cfg_best),
               "fa3_virtual_ms": virtual, "fa3_virtual_vs_triton_max_err": virtual_err,
               "fa3_virtual_speedup_vs_fa3": fa / virtual,
               "sparse_by_config": {",".join(map(str, c)): t for c, t in sparse.items()},
               "fa3_tflops": flops / fa / 1e9, "dense_tflops": flops / dense / 1e9,
               "sparse_effective_tflops": density * flops / sparse[cfg_best] / 1e9,
               "speedup_vs_fa3": fa / sparse[cfg_best]}
        record["full"].append(row)
        print(f"full  seq {n:6d}: FA3 {fa:8.2f} ms ({row['fa3_tflops']:4.0f} TF/s) | ours dense {dense:8.2f} ms "
              f"({row['dense_tflops']:4.0f}) | ours sparse d={density:.2f} {sparse[cfg_best]:8.2f} ms "
              f"({row['sparse_effective_tflops']:4.0f} eff) cfg {cfg_best} | speedup {row['speedup_vs_fa3']:.2f}x | "
              f"FA3 virtual {virtual:8.2f} ms ({fa / virtual:.2f}x, err vs ours {virtual_err:.1e})", flush=True)

        lse = torch.empty(n, HEADS, device="cuda", dtype=torch.float32)
        paged_attention(q, k_cache, v_cache, bt, cu, seq_lens, n, scale, lse=lse)
        k = torch.randn(n, HEADS, DIM, device="cuda", dtype=torch.bfloat16)
        sc = time_ms(lambda: block_scores(q, k, BLOCK, scale, lse=lse), 1 if n > 20000 else 3)
        record["scores"].append({"seq": n, "block_scores_ms": sc, "vs_fa3_step": sc / fa})
        print(f"scores seq {n:6d}: block importance {sc:8.2f} ms ({sc / fa:.2f}x an FA3 pass)", flush=True)

        qb = torch.randn(32, HEADS, DIM, device="cuda", dtype=torch.bfloat16)
        cu32 = torch.tensor([0, 32], device="cuda", dtype=torch.int32)
        qpos = torch.tensor([n - 256], device="cuda", dtype=torch.int32)
        fa_c = time_ms(lambda: fa3(qb, k_cache, v_cache, bt, cu32, seq_lens, 32, n), 20)
        for keep in args.keep:
            kept = (torch.rand(n, device="cuda") < keep)
            kept[n - 256 : n - 224] = True
            pos = kept.nonzero().squeeze(-1).int()
            tokens = None if keep >= 1 else TokenLists(pos, torch.tensor([[0, pos.numel()]], device="cuda"))
            by_variant = {}
            for cfg in DECODE_CONFIGS:
                for waves in (2, 4, 8, 16):
                    os.environ["VLLM_DLM_SPLIT_WAVES"] = str(waves)
                    splits = auto_num_splits(HEADS, pos.numel(), cfg[1], qb.device)
                    by_variant[(cfg, waves)] = time_ms(lambda: paged_attention(
                        qb, k_cache, v_cache, bt, cu32, seq_lens, 32, scale, query_pos=qpos, tokens=tokens,
                        num_splits=splits, config=KernelConfig(*cfg)), 20)
            (cfg, waves), ours = min(by_variant.items(), key=lambda kv: kv[1])
            decode_best[(n, keep)] = (cfg, waves)
            kv_bytes = 2 * HEADS * DIM * 2 * (pos.numel() if tokens is not None else n)
            row = {"context": n, "keep": keep, "fa3_ms": fa_c, "ours_ms": ours, "best_config": list(cfg),
                   "waves": waves, "ours_GBps": kv_bytes / ours / 1e6,
                   "by_variant": {f"{','.join(map(str, c))};{w}": t for (c, w), t in by_variant.items()}}
            record["cached"].append(row)
            print(f"cached ctx {n:6d} keep {keep:.2f}: FA3 {fa_c:6.3f} ms | ours {ours:6.3f} ms "
                  f"({row['ours_GBps']:5.0f} GB/s, cfg {cfg}, {waves} waves)", flush=True)
        os.environ.pop("VLLM_DLM_SPLIT_WAVES", None)
        path.write_text(json.dumps(record, indent=1))
    top = max(best, default=None)
    if top is not None:
        (out_dir / "best_config.txt").write_text(",".join(map(str, best[top])))
        cfg, waves = decode_best[(top, min(args.keep))]
        (out_dir / "best_decode.txt").write_text(f"{','.join(map(str, cfg))};{waves}")
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    main()
