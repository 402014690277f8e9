"""GPU check of the batched denoising step (`decoding.batched_step`): a batch of mixed greedy
requests (cache none / prefix / dual, block 8-32, schedule and threshold; Dream's three greedy rules)
on the bundled trained LLaDA (`models/llada-ruler-tiny`, peaked confidences) and a tiny random
Dream checkpoint, decoded with the sampler's per-request path and with the batched path in
the same in-process engine, must give the same tokens (the CPU test checks the same on CPU kernels).
Writes <out>/smoke_batched_step.json:
    python3 -m benchmarks.smoke_batched_step --out $OUT
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TRAINED_LLADA = Path(__file__).resolve().parents[1] / "models" / "llada-ruler-tiny"

LLADA = [  # (prompt length, max_tokens, extra_args)
    (40, 32, {"cache": "none", "steps": 32, "block_length": 8}),
    (300, 64, {"cache": "dual", "steps": 32, "block_length": 32}),
    (77, 48, {"cache": "prefix", "steps": 48, "block_length": 16}),
    (512, 32, {"cache": "dual", "steps": 32, "block_length": 32, "threshold": 0.9}),
    (5, 64, {"cache": "dual", "steps": 64, "block_length": 16}),
    (130, 32, {"cache": "none", "steps": 8, "block_length": 32, "threshold": 0.5}),
    (260, 64, {"cache": "dual", "steps": 64, "block_length": 32}),
    (33, 16, {"cache": "prefix", "steps": 16, "block_length": 8, "threshold": 0.7}),
]
DREAM = [
    (40, 32, {"steps": 32, "remasking": "maskgit_plus"}),
    (200, 24, {"steps": 8, "remasking": "topk_margin"}),
    (77, 32, {"steps": 12, "remasking": "entropy"}),
    (9, 16, {"steps": 16, "remasking": "maskgit_plus", "threshold": 0.02}),
]


def decode(llm, cases, vocab: int) -> list[list[int]]:
    from vllm import SamplingParams

    prompts = [{"prompt_token_ids": [(7 * i + 13 * j) % (vocab - 10) + 5 for j in range(n)]}
               for i, (n, _, _) in enumerate(cases)]
    params = [SamplingParams(max_tokens=g, temperature=0.0, ignore_eos=True, extra_args=extra)
              for _, g, extra in cases]
    return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params, use_tqdm=False)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    import gc

    import torch
    from vllm import LLM

    from vllm_dlm.tools.tiny_checkpoint import make_tiny_checkpoint

    record = {}
    for family, cases in (("llada", LLADA), ("dream", DREAM)):
        path = TRAINED_LLADA
        if family == "dream":
            path = make_tiny_checkpoint(tempfile.mkdtemp(), family, seed=3, num_layers=2, hidden_size=256,
                                        num_heads=4, intermediate_size=512, max_position=1024)
        llm = LLM(model=str(path), dtype="float32", enforce_eager=True, max_model_len=1024,
                  gpu_memory_utilization=0.3, seed=0)
        vocab = llm.llm_engine.model_config.hf_config.vocab_size
        # (imported after the engine started: on CPU the plugin must set up Triton first)
        import vllm_dlm.runner.sampler as sampler_module

        batchable = sampler_module.is_batchable
        sampler_module.is_batchable = lambda params: False
        per_request = decode(llm, cases, vocab)
        sampler_module.is_batchable = batchable
        batched = decode(llm, cases, vocab)
        same = [a == b for a, b in zip(per_request, batched)]
        distinct = len({t for out in batched for t in out})
        record[family] = {"same_tokens_per_request": same, "distinct_tokens": distinct,
                          "first_tokens": [out[:8] for out in batched]}
        print(f"smoke batched step {family}: same tokens as the per-request path: {same} "
              f"({distinct} distinct tokens in the outputs)", flush=True)
        del llm
        gc.collect()
        torch.cuda.empty_cache()
    out = Path(args.out) / "smoke_batched_step.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"wrote {out}")
    assert all(all(r["same_tokens_per_request"]) for r in record.values())


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    main()
