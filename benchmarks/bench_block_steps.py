"""Per-step latency of one request at a time, block by block, SparseD on vs off on the `sparsed`
backend with dual caching (LLaDA-8B shape, dummy weights, prompt 1k, gen 256, block 32, 256 steps,
piecewise CUDA graphs, engine core in this process, a device sync around every step).

For each variant two requests run one after the other ("<variant>0" is the first request of the
engine's life for that variant); per block the record holds (first step ms: the refresh pass,
median cached step ms). SparseD's switch step is step int(0.2 * 256) + 1 = 52, so its masks are
computed in block 3's refresh and used from then on. `PROFILE=1` prints a torch profile of eight
cached steps of the second SparseD request. Writes <out>/block_steps_<tag>.json:
    python3 -m benchmarks.bench_block_steps --tag h200 --out $OUT
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
VARIANTS = {"sparsed": {"cache": "dual"}, "skip1": {"cache": "dual", "skip": 1.0}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    import torch
    from vllm import LLM, SamplingParams

    from benchmarks.model_configs import LLADA_8B, write_config_dir

    llm = LLM(model=write_config_dir(LLADA_8B, 1024 + 256 + 64), load_format="dummy", skip_tokenizer_init=True,
              dtype="bfloat16", max_model_len=1024 + 256 + 64, max_num_seqs=4, gpu_memory_utilization=0.85,
              attention_backend="sparsed", seed=0)
    engine = llm.llm_engine
    record = {}
    for name, extra in VARIANTS.items():
        for rep in range(2):
            sp = SamplingParams(max_tokens=256, temperature=0.0, ignore_eos=True,
                                extra_args={"steps": 256, "block_length": 32, **extra})
            engine.add_request(f"{name}{rep}", {"prompt_token_ids": [(13 * j) % 400 + 10 for j in range(1024)]}, sp)
            times, prof = [], None
            while engine.has_unfinished_requests():
                if os.environ.get("PROFILE") and rep == 1 and name == "sparsed" and len(times) == 200:
                    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                              torch.profiler.ProfilerActivity.CUDA])
                    prof.__enter__()
                torch.cuda.synchronize()
                start = time.perf_counter()
                engine.step()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
                if prof is not None and len(times) == 208:
                    prof.__exit__(None, None, None)
                    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=40))
                    prof = None
            blocks = [times[1 + 32 * b : 1 + 32 * (b + 1)] for b in range(8)]  # times[0]: prompt pass
            summary = [(1000 * block[0], 1000 * statistics.median(block[1:])) for block in blocks]
            record[f"{name}{rep}"] = {"total_s": sum(times), "blocks_first_and_median_cached_ms": summary}
            print(name, rep, f"total {sum(times):.2f}s", " | ".join(f"{a:.1f}/{b:.1f}" for a, b in summary),
                  flush=True)
    path = Path(args.out) / f"block_steps_{args.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    main()
