"""GPU smoke test of the engine paths (run first in a device session, with CUDA_LAUNCH_BLOCKING=1
so a faulting kernel is named): a 2-layer LLaDA-8B-shaped model (dummy weights) through the default
backend and `sparsed` — cache none / prefix / dual, SparseD on and off, a mixed batch — checking
that `sparsed` with nothing dropped gives the default backend's tokens."""

import os


def main() -> None:
    from vllm import LLM, SamplingParams

    from benchmarks.model_configs import LLADA_8B, write_config_dir

    config = {**LLADA_8B, "n_layers": 2}
    path = write_config_dir(config, 4096)
    prompts = [{"prompt_token_ids": [(7 * i + 13 * j) % 100000 + 10 for j in range(n)]}
               for i, n in enumerate([3000, 1000, 333])]

    def run(llm, **extra):
        sp = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True,
                            extra_args={"steps": 16, "block_length": 32, **extra})
        return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, sp, use_tqdm=False)]

    kwargs = dict(load_format="dummy", skip_tokenizer_init=True, dtype="bfloat16", max_model_len=4096,
                  enforce_eager=True, gpu_memory_utilization=0.5, seed=0)
    default = LLM(model=path, **kwargs)
    expected = {cache: run(default, cache=cache) for cache in ("none", "prefix", "dual")}
    del default
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()
    sparsed = LLM(model=path, attention_backend="sparsed", **kwargs)
    for cache in ("none", "prefix", "dual"):
        same = run(sparsed, cache=cache, select=1.0) == expected[cache]
        sparse = run(sparsed, cache=cache)
        agree = sum(a == b for x, y in zip(sparse, expected[cache]) for a, b in zip(x, y)) / (64 * len(prompts))
        print(f"smoke {cache:6s}: select=1 equals default: {same}; SparseD defaults agree with dense on "
              f"{agree:.2f} of tokens (random weights)", flush=True)
    mixed = sparsed.generate(prompts, [SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True,
                                                      extra_args={"steps": 16, "block_length": 32, "cache": c})
                                       for c in ("none", "dual", "prefix")], use_tqdm=False)
    print("smoke mixed batch ok:", [len(o.outputs[0].token_ids) for o in mixed], flush=True)


if __name__ == "__main__":
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    main()
