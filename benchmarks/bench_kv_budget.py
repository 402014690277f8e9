"""Requests that run at once under a fixed KV-cache budget, with and without Sparse-dLLM eviction
(issue 5), LLaDA-8B shape, dummy weights, `sparsed` backend, engine core in this process.

The pool is fixed with `num_gpu_blocks_override` (default: room for 3.5 requests of prompt + gen
tokens); `--requests` requests are submitted at once and the engine is stepped until all finish,
recording the most requests running in one step (and the mean over steps), the preemptions, the KV
pages page eviction returned to the pool and the tokens/s; `--stagger` submits one request every
N steps instead (a server's arrivals: the requests' refreshes then fall on different steps). Writes
<out>/kv_budget_<tag>.json. CPU dry run: `--config-override` with a tiny config and `--dtype float32`.
"""

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
OFF = {"skip": 1.0}  # SparseD off
VARIANTS = {
    "dual": {"cache": "dual", **OFF},
    "dual+evict": {"cache": "dual", "keep_ratio": 0.5, **OFF},
    "dual+evict:cached+page": {"cache": "dual", "keep_ratio": 0.5, "evict_pass": "cached",
                               "evict_unit": "page", **OFF},
}


def run_requests(llm, prompts: list[list[int]], sp, tag: str, stagger: int = 0) -> dict:
    """Submit the requests (one every `stagger` steps; 0: all at once) and step the in-process
    engine until all finish -> the most running at once, running per step, preemptions, KV pages
    page eviction returned, tokens/s and each request's tokens."""
    engine = llm.llm_engine
    scheduler = engine.engine_core.engine_core.scheduler
    returned_before = scheduler._evicted.pages_freed
    pending = list(enumerate(prompts))
    outputs, running, generated, preemptions, steps = {}, [], 0, {}, 0
    start = time.perf_counter()
    while pending or engine.has_unfinished_requests():
        while pending and (stagger == 0 or steps >= stagger * pending[0][0]):
            i, prompt = pending.pop(0)
            engine.add_request(f"{tag}-{i}", {"prompt_token_ids": prompt}, sp)
        for out in engine.step():
            if out.finished:
                generated += len(out.outputs[0].token_ids)
                outputs[int(out.request_id.rsplit("-", 1)[1])] = list(out.outputs[0].token_ids)
        running.append(len(scheduler.running))
        for request in [*scheduler.running, *scheduler.waiting]:
            preemptions[request.request_id] = request.num_preemptions
        steps += 1
    seconds = time.perf_counter() - start
    return {"max_running": max(running), "mean_running": sum(running) / len(running), "running_per_step": running,
            "preemptions": sum(preemptions.values()), "steps": steps, "seconds": seconds,
            "tokens_per_s": generated / seconds, "generated": generated,
            "kv_pages_returned": scheduler._evicted.pages_freed - returned_before,
            "outputs": [outputs[i] for i in range(len(prompts))]}


def run_variant(llm, args, name: str) -> dict:
    from vllm import SamplingParams

    sp = SamplingParams(max_tokens=args.gen, temperature=0.0, ignore_eos=True,
                        extra_args={"steps": args.gen, "block_length": 32, **VARIANTS[name]})
    prompts = [[(7 * i + 13 * j) % 400 + 10 for j in range(args.prompt_len)] for i in range(args.requests)]
    row = run_requests(llm, prompts, sp, name, args.stagger)
    row.pop("outputs")
    return {"variant": name, "stagger": args.stagger, **row}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt-len", type=int, default=4096)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--budget-requests", type=float, default=3.5,
                        help="KV pool size in requests of prompt + gen tokens")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--stagger", type=int, nargs="+", default=[0],
                        help="steps between submissions (0: all at once); each value runs every variant")
    parser.add_argument("--config-override", default="{}", help="JSON merged into the LLaDA-8B config")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    from vllm import LLM

    from benchmarks.model_configs import LLADA_8B, write_config_dir

    page = 16
    pages = int(args.budget_requests * -(-(args.prompt_len + args.gen) // page))
    max_len = args.prompt_len + args.gen + 64
    config = {**LLADA_8B, **json.loads(args.config_override)}
    llm = LLM(model=write_config_dir(config, max_len), load_format="dummy", skip_tokenizer_init=True,
              dtype=args.dtype, max_model_len=max_len, max_num_seqs=args.requests, enforce_eager=args.eager,
              gpu_memory_utilization=0.9, attention_backend="sparsed", seed=0, block_size=page,
              num_gpu_blocks_override=pages, max_num_batched_tokens=max(8192, 2 * max_len))
    record = {"args": vars(args), "kv_pages": pages, "page_size": page, "rows": []}
    path = Path(args.out) / f"kv_budget_{args.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    staggers = args.stagger
    for stagger in staggers:
        args.stagger = stagger
        for name in args.variants:
            row = run_variant(llm, args, name)
            record["rows"].append(row)
            print(f"KV pool {pages} pages ({args.budget_requests} requests of {args.prompt_len}+{args.gen}), "
                  f"stagger {stagger}: {name:24s} max running {row['max_running']:2d} (mean "
                  f"{row['mean_running']:.2f}), {row['preemptions']} preemptions, {row['kv_pages_returned']} pages "
                  f"returned, {row['tokens_per_s']:8.1f} tok/s", flush=True)
            path.write_text(json.dumps(record, indent=1))
    args.stagger = staggers
    for row in record["rows"]:
        base = next(r for r in record["rows"] if r["stagger"] == row["stagger"])
        row["concurrency_vs_first"] = row["max_running"] / base["max_running"]
        row["mean_running_vs_first"] = row["mean_running"] / base["mean_running"]
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    main()
