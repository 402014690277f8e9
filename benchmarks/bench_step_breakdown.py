"""Where a batched denoising step's time goes: per engine step, the scheduler, the forward pass
(`execute_model`), the logits + our sampler (`sample_tokens`, with the sampler alone inside it) and
the scheduler's output processing, each closed by a device sync, with the step's scheduled tokens
and how many rows were full passes, partial (token-budget-cut, wasted) passes or cached steps.

LLaDA-8B shape, dummy weights, engine core in this process, piecewise CUDA graphs. `--budget` is
max_num_batched_tokens (0: vLLM's default); the batches run one after the other. `--profile` adds
a torch profile of a window of steps of the last run (top ops by CUDA and by CPU time, as text in
the JSON). `--ab` alternates the sampler's per-request and batched paths for greedy requests
(`decoding.batched_step`) in the same engine, twice per batch. One engine per process. Writes
<out>/step_breakdown_<tag>.json and .png:
    python3 -m benchmarks.bench_step_breakdown --batch 1 64 --profile --tag h200 --out $OUT
    python3 -m benchmarks.bench_step_breakdown --batch 64 --budget 98304 --tag h200_budget --out $OUT
    python3 -m benchmarks.bench_step_breakdown --batch 1 64 --ab --tag h200_ab --out $OUT
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


class _Timed:
    """Wraps a callable; each call is closed by a device sync and its seconds appended to `times`."""

    def __init__(self, fn, times: list, sync) -> None:
        self._fn, self._times, self._sync = fn, times, sync

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self._fn(*args, **kwargs)
        self._sync()
        self._times.append(time.perf_counter() - start)
        return out

    def __getattr__(self, name):
        return getattr(self._fn, name)


def _summary(steps: list[dict]) -> dict:
    def med(key, rows):
        return 1000 * statistics.median(r[key] for r in rows) if rows else None

    light = [s for s in steps if s["full_rows"] == 0 and s["partial_rows"] == 0]
    heavy = [s for s in steps if s["full_rows"] > 0]
    parts = ("schedule", "execute", "sample", "sampler", "update")
    return {
        "steps": len(steps),
        "seconds": sum(s["total"] for s in steps),
        "wasted_tokens": sum(s["partial_tokens"] for s in steps),
        "scheduled_tokens": sum(s["tokens"] for s in steps),
        "cached_only_steps": len(light),
        "median_ms_cached_only": {k: med(k, light) for k in ("total", *parts)},
        "steps_with_full_passes": len(heavy),
        "median_ms_with_full_passes": {k: med(k, heavy) for k in ("total", *parts)},
        "median_tokens_with_full_passes": statistics.median(s["tokens"] for s in heavy) if heavy else None,
    }


def run_engine(args, budget: int) -> list[dict]:
    import torch
    from vllm import LLM, SamplingParams

    from benchmarks.bench_e2e import parse_variant
    from benchmarks.model_configs import LLADA_8B, write_config_dir

    max_len = args.prompt_len + args.gen + 64
    kwargs = {"max_num_batched_tokens": budget} if budget else {}
    config = LLADA_8B
    if args.tiny:  # CPU dry run (TRITON_INTERPRET=1 VLLM_CPU_KVCACHE_SPACE=1)
        config = {**LLADA_8B, "d_model": 128, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4,
                  "mlp_hidden_size": 256}
    llm = LLM(model=write_config_dir(config, max_len), load_format="dummy", skip_tokenizer_init=True,
              dtype="float32" if args.tiny else "bfloat16", enforce_eager=args.tiny,
              max_model_len=max_len, max_num_seqs=max(args.batch),
              gpu_memory_utilization=0.85, attention_backend=args.attention_backend, seed=0, **kwargs)
    engine = llm.llm_engine
    core = engine.engine_core.engine_core
    runner = core.model_executor.driver_worker.worker.model_runner
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = {k: [] for k in ("schedule", "execute", "sample", "sampler", "update")}
    core.scheduler.schedule = _Timed(core.scheduler.schedule, times["schedule"], sync)
    core.model_executor.execute_model = _Timed(core.model_executor.execute_model, times["execute"], sync)
    core.model_executor.sample_tokens = _Timed(core.model_executor.sample_tokens, times["sample"], sync)
    core.scheduler.update_from_output = _Timed(core.scheduler.update_from_output, times["update"], sync)
    runner.sampler = _Timed(runner.sampler, times["sampler"], sync)
    outputs = []
    original_schedule = core.scheduler.schedule

    def schedule(*a, **k):
        out = original_schedule(*a, **k)
        outputs.append(out)
        return out

    core.scheduler.schedule = schedule
    extra = {"steps": args.steps, "block_length": args.block, **parse_variant(args.variant)}
    sp = SamplingParams(max_tokens=args.gen, temperature=0.0, ignore_eos=True, extra_args=extra)
    full_len = args.prompt_len + args.gen
    import vllm_dlm.runner.sampler as sampler_module

    batchable = sampler_module.is_batchable
    sampler_paths = {"batched": batchable, "per_request": lambda params: False}
    runs = [(batch, path, rep) for batch in args.batch
            for rep in range(2 if args.ab else 1)
            for path in (("per_request", "batched") if args.ab else ("batched",))]
    records = []
    for batch, path, rep in runs:
        sampler_module.is_batchable = sampler_paths[path]  # the sampler's path for greedy requests
        for warm in (True, False):
            n = 1 if warm else batch
            for i in range(n):
                prompt = [(7 * i + 13 * j) % 100000 + 10 for j in range(args.prompt_len)]
                name = f"b{batch}-{path}{rep}-{'w' if warm else 'm'}{i}"
                engine.add_request(name, {"prompt_token_ids": prompt}, sp)
            outputs.clear()
            steps, prof = [], None
            while engine.has_unfinished_requests():
                if args.profile and not warm and (batch, path, rep) == runs[-1] and len(steps) == 100:
                    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                              torch.profiler.ProfilerActivity.CUDA])
                    prof.__enter__()
                for v in times.values():
                    v.clear()
                sync()
                start = time.perf_counter()
                engine.step()
                sync()
                total = time.perf_counter() - start
                out = outputs[-1]
                rows = out.num_scheduled_tokens.values()
                full = [t for t in rows if t == full_len or t > full_len]
                partial = [t for t in rows if args.block < t < full_len and t != args.prompt_len]
                steps.append({
                    "total": total, "tokens": out.total_num_scheduled_tokens, "rows": len(rows),
                    "full_rows": len(full), "partial_rows": len(partial), "partial_tokens": sum(partial),
                    **{k: sum(v) for k, v in times.items()},
                })
                if prof is not None and len(steps) == 140:
                    prof.__exit__(None, None, None)
                    records.append({"budget": budget, "batch": batch, "profile": {
                        "by_cuda": prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=30),
                        "by_cpu": prof.key_averages().table(sort_by="cpu_time_total", row_limit=40)}})
                    print(records[-1]["profile"]["by_cpu"])
                    print(records[-1]["profile"]["by_cuda"])
                    prof = None
            if warm:
                continue
            summary = _summary(steps)
            summary["tokens_per_s"] = batch * args.gen / summary["seconds"]
            records.append({"budget": budget or "default", "batch": batch, "sampler_path": path, "rep": rep,
                            "summary": summary, "steps": steps})
            print(f"budget={budget or 'default'} batch={batch} {path}{rep}: {summary['tokens_per_s']:.1f} tok/s "
                  f"{json.dumps({k: v for k, v in summary.items() if k != 'steps'})}", flush=True)
    return records


def plot(records: list[dict], path: Path, title: str) -> None:
    """Per run: tokens/s, and the median cached-only step split into forward, sampler and rest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in records if "steps" in r]
    labels = [f"b{r['batch']} {r.get('sampler_path', 'batched')}{r.get('rep', 0)}" for r in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(runs)), 4.5))
    left.bar(labels, [r["summary"]["tokens_per_s"] for r in runs], color="tab:blue")
    left.set_ylabel("tokens/s")
    medians = [r["summary"]["median_ms_cached_only"] for r in runs]
    execute = [m["execute"] for m in medians]
    sampler = [m["sampler"] for m in medians]
    rest = [m["total"] - m["execute"] - m["sampler"] for m in medians]
    right.bar(labels, execute, label="forward (execute_model)")
    right.bar(labels, sampler, bottom=execute, label="logits + sampler")
    right.bar(labels, rest, bottom=[a + b for a, b in zip(execute, sampler)], label="rest")
    right.set_ylabel("median cached-only step, ms")
    right.legend()
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=60)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--budget", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model (CPU dry run)")
    parser.add_argument("--prompt-len", type=int, default=1024)
    parser.add_argument("--gen", type=int, default=256)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--variant", default="dual")
    parser.add_argument("--attention-backend", default=None)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--ab", action="store_true",
                        help="per batch, alternate the sampler's per-request and batched paths (2 runs each)")
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    records = run_engine(args, args.budget)
    path = Path(args.out) / f"step_breakdown_{args.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"args": vars(args), "records": records}, indent=1))
    plot(records, path.with_suffix(".png"), f"LLaDA-8B shape, {args.variant}, prompt {args.prompt_len}, "
         f"gen {args.gen}, {args.steps} steps: step time by part")
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    main()
