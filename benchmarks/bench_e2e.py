"""End-to-end decoding throughput through `LLM.generate` (dummy weights, official 8B shapes),
comparing decoding variants side by side in one engine.

A variant is `cache[:threshold][:knob=value ...]`, e.g. `none`, `prefix`, `dual`, `dual:0.9`,
`dual:skip=1` (SparseD off on the `sparsed` backend). Prints a table and
writes benchmarks/results/e2e_<tag>.json. Example (GPU machine):
    python -m benchmarks.bench_e2e --prompt-len 1024 4096 --gen 256 --block 32 --steps 256 \
        --variants none prefix dual dual:0.9 --batch 1 --tag cache_modes
"""

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def parse_variant(text: str) -> dict:
    """`cache[:threshold][:knob=value ...]`, e.g. `dual:0.9`, `dual:skip=1` -> extra_args."""
    cache, *rest = text.split(":")
    extra = {"cache": cache}
    for part in rest:
        key, eq, value = part.partition("=")
        if eq:
            extra[key] = float(value) if "." in value else int(value)
        else:
            extra["threshold"] = float(part)
    return extra


def save(args, rows) -> Path:
    out = Path(args.out) / f"e2e_{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return out


def run(args) -> list[dict]:
    import torch
    from vllm import LLM, SamplingParams

    from benchmarks.model_configs import DREAM_7B, LLADA_8B, write_config_dir

    config = LLADA_8B if args.model == "llada" else DREAM_7B
    max_len = max(args.prompt_len) + args.gen + 64
    llm = LLM(
        model=write_config_dir(config, max_len),
        load_format="dummy",
        skip_tokenizer_init=True,
        dtype="bfloat16",
        max_model_len=max_len,
        max_num_seqs=max(args.batch),
        enforce_eager=not args.compile,
        gpu_memory_utilization=args.gpu_memory_utilization,
        attention_backend=args.attention_backend,
        seed=0,
    )
    rows = []
    for prompt_len in args.prompt_len:
        for variant in args.variants:
            extra = parse_variant(variant)
            # Warm-up: one whole request with the measured settings, so every kernel of the
            # variant's path is compiled before timing (SparseD's switch-step kernels run only
            # in a full pass after its switch step, which a short request never reaches).
            llm.generate([{"prompt_token_ids": [(13 * j) % 100000 + 10 for j in range(prompt_len)]}],
                         SamplingParams(max_tokens=args.gen, temperature=0.0, ignore_eos=True,
                                        extra_args={"steps": args.steps, "block_length": args.block, **extra}),
                         use_tqdm=False)
            for batch in args.batch:
                prompts = [
                    {"prompt_token_ids": [(7 * i + 13 * j) % 100000 + 10 for j in range(prompt_len)]}
                    for i in range(batch)
                ]
                params = SamplingParams(
                    max_tokens=args.gen, temperature=0.0, ignore_eos=True,
                    extra_args={"steps": args.steps, "block_length": args.block, **extra},
                )
                warm = SamplingParams(
                    max_tokens=args.block, temperature=0.0, ignore_eos=True,
                    extra_args={"steps": 2, "block_length": args.block, **extra},
                )
                llm.generate(prompts[:1], warm, use_tqdm=False)
                torch.cuda.synchronize()
                start = time.perf_counter()
                outs = llm.generate(prompts, params, use_tqdm=False)
                torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                generated = sum(len(o.outputs[0].token_ids) for o in outs)
                row = {
                    "model": args.model, "variant": variant, "batch": batch,
                    "prompt_len": prompt_len, "gen": args.gen, "block": args.block,
                    "steps": args.steps, "seconds": seconds,
                    "tokens_per_s": generated / seconds,
                    "ms_per_step": 1000 * seconds / args.steps,
                    "device": torch.cuda.get_device_name(),
                    "attention_backend": args.attention_backend or "default",
                    "first_tokens": list(outs[0].outputs[0].token_ids[:8]),
                }
                rows.append(row)
                save(args, rows)  # after every row: a run cut short keeps what it measured
                print(
                    f"{args.model:6s} {variant:10s} batch={batch:3d} prompt={prompt_len:6d} "
                    f"gen={args.gen} steps={args.steps}: {row['tokens_per_s']:9.1f} tok/s "
                    f"{row['seconds']:8.2f} s",
                    flush=True,
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["llada", "dream"], default="llada")
    parser.add_argument("--prompt-len", type=int, nargs="+", default=[1024])
    parser.add_argument("--gen", type=int, default=256)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--variants", nargs="+", default=["none"])
    parser.add_argument("--attention-backend", default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    rows = run(args)
    print(f"wrote {save(args, rows)}")


if __name__ == "__main__":
    main()
