"""Per-step latency of full-sequence denoising steps (cache `none`, batch 1, LLaDA-8B shape, dummy
weights): `sparsed` (SparseD, paper defaults) against vLLM's default backend (FlashAttention-3),
prompts 4k-64k, each backend in its own engine, one after the other.

The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so each
`LLMEngine.step()` is one engine step and is timed alone. A request of `--steps` steps at
skip 0.2 runs: vLLM's prompt pass, dense steps up to the switch step int(skip*steps)+1 (which also
computes the masks), then sparse steps. Reported per prompt length: the median dense step, the
switch step, the median sparse step, their ratio to the FA3 step, and the modelled whole-request
time at 128 and 1024 steps. Writes <out>/sparsed_step_<tag>.json.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def step_times(llm, prompt_len: int, steps: int, extra: dict) -> list[float]:
    """Seconds of each engine step of one request, in order (the prompt pass first)."""
    import torch
    from vllm import SamplingParams

    engine = llm.llm_engine
    prompt = {"prompt_token_ids": [(13 * j) % 400 + 10 for j in range(prompt_len)]}
    sp = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True,
                        extra_args={"steps": steps, "block_length": 32, **extra})
    engine.add_request(f"r{prompt_len}-{time.monotonic_ns()}", prompt, sp)
    times = []
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    while engine.has_unfinished_requests():
        sync()
        start = time.perf_counter()
        engine.step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def run_backend(backend: str | None, args) -> list[dict]:
    """backend None: vLLM's default (FA3); "sparsed"; "sparsed:triton" (SparseD steps on our
    Triton kernel instead of FA3 virtual sequences)."""
    from vllm import LLM

    label = backend or "default (FA3)"
    if backend and ":" in backend:
        backend, kernel = backend.split(":")
        os.environ["VLLM_DLM_SPARSE_KERNEL"] = kernel
    else:
        os.environ.pop("VLLM_DLM_SPARSE_KERNEL", None)

    from benchmarks.model_configs import LLADA_8B, write_config_dir

    max_len = max(args.prompt_len) + 64
    config = {**LLADA_8B, **json.loads(args.config_override)}
    llm = LLM(model=write_config_dir(config, max_len), load_format="dummy", skip_tokenizer_init=True,
              dtype="bfloat16", max_model_len=max_len, max_num_seqs=2, enforce_eager=True,
              gpu_memory_utilization=0.9, attention_backend=backend, seed=0)
    extra = {"skip": args.skip, "select": args.select, "block_size": args.block_size} if backend else {}
    rows = []
    step_times(llm, min(args.prompt_len), args.steps, extra)  # warm-up (kernel compilation)
    for n in args.prompt_len:
        t = step_times(llm, n, args.steps, extra)
        rows.append({"backend": label, "prompt_len": n, "step_s": t})
        print(f"{label:14s} prompt {n:6d}: steps " + " ".join(f"{x * 1000:.0f}" for x in t) + " ms", flush=True)
    del llm
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def summarize(rows: list[dict], args) -> list[dict]:
    out = []
    for n in args.prompt_len:
        base = next((r for r in rows if r["prompt_len"] == n and r["backend"].startswith("default")), None)
        if base is None:
            continue
        for ours in (r for r in rows if r["prompt_len"] == n and r["backend"].startswith("sparsed")):
            out.append(_summary_row(n, base, ours, args))
    return out


def _summary_row(n: int, base: dict, ours: dict, args) -> dict:
    """Median FA3 step vs the sparsed request's dense, switch and sparse steps; whole-request
    speedups at 128 and 1024 steps modelled from them."""
    switch = int(args.skip * args.steps) + 1
    fa3 = statistics.median(base["step_s"][1:])  # step 0 is the prompt-only pass
    dense = statistics.median(ours["step_s"][1 : 1 + switch])
    at_switch = ours["step_s"][1 + switch]
    sparse = statistics.median(ours["step_s"][2 + switch :])
    row = {"prompt_len": n, "backend": ours["backend"], "fa3_step_ms": 1000 * fa3,
           "sparsed_dense_step_ms": 1000 * dense, "switch_step_ms": 1000 * at_switch,
           "sparse_step_ms": 1000 * sparse, "sparse_step_speedup": fa3 / sparse}
    for total in (128, 1024):
        sw = int(args.skip * total) + 1
        ours_total = sw * dense + at_switch + (total - sw - 1) * sparse
        row[f"request_speedup_{total}_steps"] = total * fa3 / ours_total
    print(f"{row['backend']:14s} prompt {n:6d}: FA3 step {row['fa3_step_ms']:8.1f} ms | sparse step "
          f"{row['sparse_step_ms']:8.1f} ms ({row['sparse_step_speedup']:.2f}x) | switch {row['switch_step_ms']:8.1f} ms"
          f" | request 128 steps {row['request_speedup_128_steps']:.2f}x, 1024 steps "
          f"{row['request_speedup_1024_steps']:.2f}x", flush=True)
    return row


def run_in_subprocess(backend: str, args) -> list[dict]:
    """One backend per process: an in-process engine's GPU memory is not given back reliably."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "benchmarks.bench_sparsed_step", "--backends", backend, "--out", tmp,
               "--tag", "one", "--prompt-len", *map(str, args.prompt_len), "--steps", str(args.steps),
               "--skip", str(args.skip), "--select", str(args.select), "--block-size", str(args.block_size),
               "--config-override", args.config_override]
        subprocess.run(cmd, check=True)
        return json.loads((Path(tmp) / "sparsed_step_one.json").read_text())["rows"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt-len", type=int, nargs="+", default=[4096, 16384, 32768, 65536])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip", type=float, default=0.2)
    parser.add_argument("--select", type=float, default=0.3)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--backends", nargs="+", default=["default", "sparsed", "sparsed:triton"])
    parser.add_argument("--config-override", default="{}", help="JSON merged into the LLaDA-8B config")
    parser.add_argument("--baseline-json", default=None,
                        help="take the default-backend rows from this earlier run instead of rerunning them")
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    path = Path(args.out) / f"sparsed_step_{args.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.baseline_json:
        rows += [r for r in json.loads(Path(args.baseline_json).read_text())["rows"]
                 if r["backend"].startswith("default")]
    for backend in args.backends:
        if len(args.backends) == 1:
            rows += run_backend(None if backend == "default" else backend, args)
        else:
            rows += run_in_subprocess(backend, args)
        path.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    summary = summarize(rows, args)
    path.write_text(json.dumps({"args": vars(args), "rows": rows, "summary": summary}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    main()
