"""Latency of one cached denoising step at long context (dual cache, batch 1, dummy 8B weights).

Two runs of one 32-token block, with `steps` = 2 and 32: each has one full (refresh) pass and the
rest are cached steps, so (t32 - t2) / 30 is the cost of a cached step. Writes
benchmarks/results/cached_step_<tag>.json.
"""

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--context", type=int, nargs="+", default=[65536])
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=["dual", "prefix"])
    parser.add_argument("--attention-backend", default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    import torch
    from vllm import LLM, SamplingParams

    from benchmarks.model_configs import LLADA_8B, write_config_dir

    max_len = max(args.context) + args.block + 64
    llm = LLM(model=write_config_dir(LLADA_8B, max_len), load_format="dummy", skip_tokenizer_init=True,
              dtype="bfloat16", max_model_len=max_len, max_num_seqs=4, enforce_eager=not args.compile,
              gpu_memory_utilization=0.9, attention_backend=args.attention_backend, seed=0)
    rows = []
    for context in args.context:
        prompt = [{"prompt_token_ids": [(13 * j) % 100000 + 10 for j in range(context)]}]
        for cache in args.variants:
            times = {}
            for steps in (2, 32, 2, 32):  # second pair is the measurement (first warms up)
                sp = SamplingParams(max_tokens=args.block, temperature=0.0, ignore_eos=True,
                                    extra_args={"steps": steps, "block_length": args.block, "cache": cache})
                torch.cuda.synchronize()
                start = time.perf_counter()
                llm.generate(prompt, sp, use_tqdm=False)
                torch.cuda.synchronize()
                times[steps] = time.perf_counter() - start
            step_ms = 1000 * (times[32] - times[2]) / 30
            rows.append({"context": context, "variant": cache, "cached_step_ms": step_ms,
                         "refresh_plus_one_step_s": times[2], "device": torch.cuda.get_device_name(),
                         "attention_backend": args.attention_backend or "default"})
            print(f"context={context:6d} {cache:6s}: cached step {step_ms:7.2f} ms "
                  f"(refresh + 1 step {times[2]:.2f} s)", flush=True)
    out = Path(args.out) / f"cached_step_{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
