"""GPU check of page eviction's returned pages (`engine.evicted_pages`): the bundled trained LLaDA
(`models/llada-ruler-tiny`), `sparsed` backend, dual cache + page eviction (keep 0.5, cached
selection), 8 requests, first on a roomy KV pool, then on a pool of 4.5 requests' pages where they
only fit at once because freed pages are refilled at each refresh (preempting when short). The two
runs must give the same tokens; the tight run's concurrency, preemptions and pages returned are
recorded (the CPU test, tests/test_page_return.py, checks the same on CPU kernels). Writes
<out>/smoke_page_return.json:
    python3 -m benchmarks.smoke_page_return --out $OUT
"""

import argparse
import gc
import json
import os
from pathlib import Path

from benchmarks.bench_kv_budget import run_requests

RESULTS = Path(__file__).parent / "results"
TRAINED_LLADA = Path(__file__).resolve().parents[1] / "models" / "llada-ruler-tiny"
PAGE, PROMPT, GEN, REQUESTS = 16, 300, 64, 8
EXTRA = {"cache": "dual", "skip": 1.0, "keep_ratio": 0.5, "evict_pass": "cached", "evict_unit": "page",
         "steps": GEN, "block_length": 16}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    from vllm import LLM, SamplingParams

    sp = SamplingParams(max_tokens=GEN, temperature=0.0, ignore_eos=True, extra_args=EXTRA)
    prompts = [[(7 * i + 13 * j) % 430 + 5 for j in range(PROMPT + 11 * i)] for i in range(REQUESTS)]
    whole = [-(-(len(p) + GEN) // PAGE) for p in prompts]
    pool = int(4.5 * sum(whole) / len(whole))
    dual = SamplingParams(max_tokens=GEN, temperature=0.0, ignore_eos=True,
                          extra_args={"cache": "dual", "skip": 1.0, "steps": GEN, "block_length": 16})
    record = {"pool_pages": pool, "whole_sequence_pages": whole}
    for name, override in (("roomy", None), ("tight", pool)):
        llm = LLM(model=str(TRAINED_LLADA), dtype="float32", enforce_eager=True, max_model_len=1024,
                  gpu_memory_utilization=0.3, seed=0, attention_backend="sparsed", block_size=PAGE,
                  num_gpu_blocks_override=override)
        record[name] = run_requests(llm, prompts, sp, name)
        if override is None:  # control: page eviction, one request at a time (no batching at all)
            record["alone"] = run_requests(llm, prompts, sp, "alone", stagger=100)
        # control: plain dual caching (no eviction) through the same pool: what batch composition
        # and preemption alone do to the tokens
        record[f"{name}_dual"] = run_requests(llm, prompts, dual, f"{name}_dual")
        del llm
        gc.collect()
    tight, roomy = record["tight"], record["roomy"]
    record["same_tokens_per_request"] = [a == b for a, b in zip(roomy["outputs"], tight["outputs"])]
    record["control_dual_same_tokens_per_request"] = [
        a == b for a, b in zip(record["roomy_dual"]["outputs"], record["tight_dual"]["outputs"])]
    record["alone_vs_roomy_same_tokens_per_request"] = [
        a == b for a, b in zip(record["alone"]["outputs"], roomy["outputs"])]
    record["alone_vs_tight_same_tokens_per_request"] = [
        a == b for a, b in zip(record["alone"]["outputs"], tight["outputs"])]
    record["distinct_tokens"] = len({t for out in tight["outputs"] for t in out})
    for run in (tight, roomy, record["alone"], record["roomy_dual"], record["tight_dual"]):
        run["first_tokens"] = [out[:8] for out in run.pop("outputs")]
    print(f"smoke page return: pool {pool} pages (whole sequences {whole}); tight run: most running "
          f"{tight['max_running']} of {REQUESTS}, {tight['preemptions']} preemptions, {tight['kv_pages_returned']} "
          f"pages returned; same tokens as the roomy pool: {record['same_tokens_per_request']} "
          f"({record['distinct_tokens']} distinct tokens); control, dual without eviction, tight "
          f"({record['tight_dual']['preemptions']} preemptions) vs roomy: "
          f"{record['control_dual_same_tokens_per_request']}; page eviction one request at a time vs "
          f"roomy batch: {record['alone_vs_roomy_same_tokens_per_request']}, vs tight: "
          f"{record['alone_vs_tight_same_tokens_per_request']}", flush=True)
    path = Path(args.out) / "smoke_page_return.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    main()
