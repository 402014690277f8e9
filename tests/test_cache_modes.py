"""Cache modes `prefix` / `dual` and threshold decoding against a plain-torch re-implementation of
Fast-dLLM's generate_with_prefix_cache / generate_with_dual_cache (fp32, greedy), and the agreement
of the approximate modes with the exact `none`."""

import pytest
import torch
from vllm import LLM, SamplingParams

from tests.conftest import ENGINE_KWARGS
from tests.reference.llada import LLaDAReference, fast_dllm_generate, llada_generate
from tests.test_parity_llm import prompts


@pytest.fixture(scope="module", params=[None, "sparsed"], ids=["default-attention", "sparsed"])
def llada(tiny_llada, request):
    llm = LLM(model=tiny_llada, attention_backend=request.param, **ENGINE_KWARGS)
    yield llm, LLaDAReference.from_pretrained(tiny_llada).eval()
    del llm


CASES = [  # (cache, max_tokens, steps, block_length, threshold)
    ("prefix", 16, 8, 8, None),
    ("dual", 16, 8, 8, None),
    ("dual", 24, 12, 8, None),
    ("prefix", 16, 16, 8, 0.5),
    ("dual", 24, 24, 8, 0.7),
]


def _params(cache, g, s, b, t):
    extra = {"steps": s, "block_length": b, "cache": cache}
    if t is not None:
        extra["threshold"] = t
    return SamplingParams(max_tokens=g, temperature=0.0, ignore_eos=True, extra_args=extra)


def _expected(ref, prompt, mask_id, cache, g, s, b, t):
    with torch.no_grad():
        out = fast_dllm_generate(ref, torch.tensor([prompt]), steps=s, gen_length=g, block_length=b,
                                 mask_id=mask_id, cache=cache, threshold=t)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-g{c[1]}-s{c[2]}-b{c[3]}-t{c[4]}")
def test_cached_mode_matches_fast_dllm_reference(llada, case):
    llm, ref = llada
    mask_id = llm.llm_engine.model_config.hf_config.mask_token_id
    prompt = prompts(ref.config["vocab_size"], [11], seed=7)[0]
    out = llm.generate([{"prompt_token_ids": prompt}], _params(*case), use_tqdm=False)
    assert list(out[0].outputs[0].token_ids) == _expected(ref, prompt, mask_id, *case)


def test_mixed_cache_modes_in_one_batch_match_reference(llada):
    """Requests at different cache modes, prompt lengths and block positions share forward passes."""
    llm, ref = llada
    mask_id = llm.llm_engine.model_config.hf_config.mask_token_id
    token_prompts = prompts(ref.config["vocab_size"], [4, 19, 9, 30, 13], seed=8)
    outs = llm.generate([{"prompt_token_ids": p} for p in token_prompts],
                        [_params(*c) for c in CASES], use_tqdm=False)
    for prompt, case, out in zip(token_prompts, CASES, outs):
        assert list(out.outputs[0].token_ids) == _expected(ref, prompt, mask_id, *case), case


def test_none_equals_reference_while_cached_modes_mostly_agree(llada):
    """`none` is exact; `prefix`/`dual` approximate it. Agreement is reported, and must be high
    on this model (cached KV differs only through the still-masked positions)."""
    llm, ref = llada
    mask_id = llm.llm_engine.model_config.hf_config.mask_token_id
    token_prompts = prompts(ref.config["vocab_size"], [7, 12, 20, 5], seed=9)
    exact = []
    for p in token_prompts:
        with torch.no_grad():
            exact.append(llada_generate(ref, torch.tensor([p]), steps=16, gen_length=32, block_length=8,
                                        mask_id=mask_id)[0, len(p):].tolist())
    for cache in ("prefix", "dual"):
        outs = llm.generate([{"prompt_token_ids": p} for p in token_prompts],
                            _params(cache, 32, 16, 8, None), use_tqdm=False)
        same = sum(a == b for o, e in zip(outs, exact) for a, b in zip(o.outputs[0].token_ids, e))
        agreement = same / sum(len(e) for e in exact)
        print(f"token agreement with none: {cache} {agreement:.3f}")
        assert agreement >= 0.5
