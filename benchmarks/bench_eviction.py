"""Sparse-dLLM eviction (and its composition with SparseD) on the `sparsed` backend, LLaDA-8B shape,
dummy weights, batch 1, one engine (engine core in this process, so steps are timed one by one and
GPU memory is read directly):

  cached   a dual-cache step at long context (default 64k): keep_ratio 1.0 vs 0.5 (tokens as
           Sparse-dLLM, whole pages on FA3, and 0.5 with SparseD masks on top), median of the
           block's cached steps after the selecting one
  e2e      prompt 1k-8k, gen 256, block 32: tokens/s and peak GPU memory above the KV pool for
           none / dual / dual+evict (as published, and with vllm-dlm's cached selection step and
           page eviction) / dual+evict+SparseD, one token per step (256 steps). `none`
           is run with --none-steps steps (every step is the same full pass) and its 256-step time
           extrapolated from its measured per-step time; both are recorded.

Writes <out>/eviction_<tag>.json.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
OFF = {"skip": 1.0}  # SparseD off (the sparsed backend turns it on by default)
EVICT = {"cache": "dual", "keep_ratio": 0.5, **OFF}
FAST = {"evict_pass": "cached", "evict_unit": "page"}  # vllm-dlm's variant: no second full pass, FA3
VARIANTS = {
    "none": {"cache": "none", **OFF},
    "dual": {"cache": "dual", **OFF},
    "dual+evict": EVICT,  # Sparse-dLLM as published: tokens, a second full pass per block
    "dual+evict:cached": {**EVICT, "evict_pass": "cached"},
    "dual+evict:page": {**EVICT, "evict_unit": "page"},
    "dual+evict:cached+page": {**EVICT, **FAST},
    "dual+evict+sparsed": {"cache": "dual", "keep_ratio": 0.5},
}
CACHED_STEP_VARIANTS = {  # the 64k cached step
    "keep 1.0": {"cache": "dual", **OFF},
    "keep 0.5": EVICT,
    "keep 0.5 pages": {**EVICT, "evict_unit": "page"},
    "keep 0.5 pages, cached pass": {**EVICT, **FAST},
    "keep 0.5 + SparseD": {"cache": "dual", "keep_ratio": 0.5, "skip": 0.0},
}


def timed_generate(llm, prompt_len, gen, steps, extra) -> tuple[float, int]:
    """(seconds, peak bytes allocated above the start) of one request."""
    import torch
    from vllm import SamplingParams

    prompt = [{"prompt_token_ids": [(13 * j) % 400 + 10 for j in range(prompt_len)]}]
    sp = SamplingParams(max_tokens=gen, temperature=0.0, ignore_eos=True,
                        extra_args={"steps": steps, "block_length": 32, **extra})
    if not torch.cuda.is_available():  # CPU dry run of the script
        start = time.perf_counter()
        llm.generate(prompt, sp, use_tqdm=False)
        return time.perf_counter() - start, 0
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    llm.generate(prompt, sp, use_tqdm=False)
    torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() - base


def check_page_tables_on_fa3() -> float | None:
    """GPU check of page eviction: FA3 over per-layer tables of kept pages vs our Triton kernel
    over the same kept positions (tests/attention/page_eviction_check.py, the CPU test's check on
    the real kernels), bf16, up to 8k keys, a row without eviction in the batch. Max |error|."""
    import functools

    import torch

    from tests.attention.page_eviction_check import page_tables_vs_token_lists
    from vllm_dlm.attention.impl import _flash_attention_3
    from vllm_dlm.attention.ops.paged_attention import paged_attention

    fa3 = _flash_attention_3()
    if fa3 is None:
        return None

    def token_lists(q, k_cache, v_cache, bt, qsl, seq_lens, query_pos, tokens, max_query_len, scale):
        return paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, max_query_len, scale,
                               query_pos=query_pos, tokens=tokens)

    return page_tables_vs_token_lists(
        functools.partial(fa3, fa_version=3), token_lists, [32, 32, 32], [8203, 5000, 3001], [4000, 4968, 100],
        num_heads=32, num_kv_heads=32, head_dim=128, g=torch.Generator(device="cuda").manual_seed(0),
        device="cuda", dtype=torch.bfloat16)


def set_page_return(on: bool) -> None:
    """A/B switch for page eviction's returned pages, engine core in this process: off, kept pages
    stay where they are (no compaction) and the scheduler frees nothing."""
    import torch

    import vllm_dlm.attention.impl as impl
    from vllm_dlm.attention.sparsity import eviction
    from vllm_dlm.engine.evicted_pages import EvictedPages

    if not hasattr(EvictedPages, "_free_dead"):
        EvictedPages._free_dead = EvictedPages.free_dead
    if on:
        impl.compact_kept_pages, EvictedPages.free_dead = eviction.compact_kept_pages, EvictedPages._free_dead
    else:
        impl.compact_kept_pages = lambda kv, row_pages, kept, live: row_pages[kept.long()].to(torch.int32)
        EvictedPages.free_dead = lambda self, *args: 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--context", type=int, default=65536)
    parser.add_argument("--prompt-len", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--gen", type=int, default=256)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--none-steps", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--cached-variants", nargs="*", default=list(CACHED_STEP_VARIANTS))
    parser.add_argument("--config-override", default="{}", help="JSON merged into the LLaDA-8B config")
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--page-return-ab", action="store_true",
                        help="page variants of the cached step also without returning pages (A/B, twice each)")
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    from vllm import LLM

    from benchmarks.bench_sparsed_step import step_times
    from benchmarks.model_configs import LLADA_8B, write_config_dir

    path = Path(args.out) / f"eviction_{args.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    max_len = max(args.context, max(args.prompt_len)) + args.gen + 64
    config = {**LLADA_8B, **json.loads(args.config_override)}
    llm = LLM(model=write_config_dir(config, max_len), load_format="dummy", skip_tokenizer_init=True,
              dtype="bfloat16", max_model_len=max_len, max_num_seqs=2, enforce_eager=args.eager,
              gpu_memory_utilization=0.9, attention_backend="sparsed", seed=0)
    record = {"args": vars(args), "cached": [], "e2e": []}
    try:
        err = check_page_tables_on_fa3()
    except Exception as exc:  # report, and still time the engine
        err = f"check failed: {exc!r}"
    record["page_tables_fa3_vs_triton_max_abs_err"] = err
    print(f"page eviction on FA3 vs Triton token lists, bf16: max |err| {err}", flush=True)

    runs = [(name, True) for name in args.cached_variants]
    if args.page_return_ab:
        paged = [name for name in args.cached_variants if CACHED_STEP_VARIANTS[name].get("evict_unit") == "page"]
        runs = [(name, True) for name in args.cached_variants if name not in paged]
        runs += [(name, on) for _ in range(2) for name in paged for on in (True, False)]
    for name, page_return in runs:
        extra = CACHED_STEP_VARIANTS[name]
        set_page_return(page_return)
        if not page_return:
            name = f"{name} (no page return)"
        step_times(llm, min(2048, args.context // 2), 32, extra)  # warm-up (kernels)
        times = step_times(llm, args.context - 32, 32, extra)  # 1 block of 32 steps
        # steps opening the block that are not plain cached steps: the refresh, and the selecting
        # step (a second full pass, or a cached step that also scores)
        full = 2 if "keep_ratio" in extra else 1
        cached = statistics.median(times[1 + full :])
        record["cached"].append({"variant": name, "context": args.context, "cached_step_ms": 1000 * cached,
                                 "opening_steps_ms": [1000 * t for t in times[1 : 1 + full]],
                                 "step_s": times})
        print(f"cached step ctx {args.context}: {name:20s} {1000 * cached:7.2f} ms", flush=True)
        path.write_text(json.dumps(record, indent=1))
    for row in record["cached"]:
        row["vs_keep_1"] = row["cached_step_ms"] / record["cached"][0]["cached_step_ms"]

    for n in args.prompt_len:
        for variant in args.variants:
            extra = VARIANTS[variant]
            steps = args.none_steps if extra["cache"] == "none" else args.steps
            timed_generate(llm, n, 32, 4, extra)  # warm-up
            seconds, peak = timed_generate(llm, n, args.gen, steps, extra)
            row = {"prompt_len": n, "variant": variant, "steps": steps, "seconds": seconds,
                   "tokens_per_s": args.gen / seconds, "peak_bytes_above_kv_pool": peak}
            if steps != args.steps:  # every step is the same full pass: scale to args.steps
                single, _ = timed_generate(llm, n, args.gen, args.gen // 32, extra)  # 1 step per block
                per_step = (seconds - single) / (steps - args.gen // 32)
                row["extrapolated_seconds"] = seconds + per_step * (args.steps - steps)
                row["tokens_per_s_at_steps"] = args.gen / row["extrapolated_seconds"]
            record["e2e"].append(row)
            print(f"prompt {n:5d} {variant:20s} steps {steps:4d}: {row['tokens_per_s']:8.1f} tok/s "
                  f"({row.get('tokens_per_s_at_steps', row['tokens_per_s']):8.1f} at {args.steps} steps), "
                  f"peak +{peak / 2**20:7.0f} MiB", flush=True)
            path.write_text(json.dumps(record, indent=1))
    for n in args.prompt_len:
        rows = {r["variant"]: r for r in record["e2e"] if r["prompt_len"] == n}
        if "none" in rows:
            none = rows["none"].get("tokens_per_s_at_steps", rows["none"]["tokens_per_s"])
            for r in rows.values():
                r["speedup_vs_none"] = r.get("tokens_per_s_at_steps", r["tokens_per_s"]) / none
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    main()
