"""SparseD through the engine (`attention_backend="sparsed"`): token parity with a plain-torch
re-implementation of SparseD's generation (cache none, and with Fast-dLLM's prefix/dual caches),
dense parity when nothing is dropped, batch independence, and named errors for bad knobs."""

import pytest
import torch
from vllm import LLM, SamplingParams

from tests.conftest import ENGINE_KWARGS
from tests.reference.llada import LLaDAReference, fast_dllm_generate, llada_generate
from tests.reference.sparsed import SparseDModel
from tests.test_parity_llm import prompts

GEN, STEPS, BLOCK = 32, 16, 16


@pytest.fixture(scope="module")
def engines(tiny_llada, sparsed_llm):
    default = LLM(model=tiny_llada, **ENGINE_KWARGS)
    yield default, sparsed_llm, LLaDAReference.from_pretrained(tiny_llada).eval()
    del default


def run(llm, token_prompts, **extra):
    """Greedy outputs of `token_prompts` (max_tokens GEN, STEPS steps, blocks of BLOCK)."""
    sp = SamplingParams(max_tokens=GEN, temperature=0.0, ignore_eos=True,
                        extra_args={"steps": STEPS, "block_length": BLOCK, **extra})
    outs = llm.generate([{"prompt_token_ids": p} for p in token_prompts], sp, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def _reference(ref, prompt, cache="none", **sparsed):
    model = SparseDModel(ref, steps=STEPS, prompt_len=len(prompt), **sparsed)
    x = torch.tensor([prompt])
    mask_id = ref.config["mask_token_id"]
    with torch.no_grad():
        if cache == "none":
            out = llada_generate(model, x, steps=STEPS, gen_length=GEN, block_length=BLOCK, mask_id=mask_id)
        else:
            out = fast_dllm_generate(model, x, steps=STEPS, gen_length=GEN, block_length=BLOCK,
                                     mask_id=mask_id, cache=cache)
    assert model.masks, "the reference never went sparse: the test would not test SparseD"
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("isolated", [True, False])
def test_cache_none_matches_the_sparsed_reference(engines, isolated):
    default, sparsed, ref = engines
    token_prompts = prompts(380, [120, 45, 77], seed=31)
    knobs = dict(skip=0.2, select=0.3, block_size=16, isolated=isolated)
    got = run(sparsed, token_prompts, **knobs)
    for prompt, tokens in zip(token_prompts, got):
        assert tokens == _reference(ref, prompt, **knobs)
    assert got != run(default, token_prompts), "the masks should change this output"


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cached_modes_match_the_sparsed_reference(engines, cache):
    _, sparsed, ref = engines
    token_prompts = prompts(380, [100, 61], seed=32)
    knobs = dict(skip=0.3, select=0.3, block_size=16)
    got = run(sparsed, token_prompts, cache=cache, **knobs)
    for prompt, tokens in zip(token_prompts, got):
        assert tokens == _reference(ref, prompt, cache, **knobs)


def test_nothing_dropped_equals_the_default_backend(engines):
    default, sparsed, _ = engines
    token_prompts = prompts(380, [40, 70, 9], seed=21)
    for cache in ("none", "dual"):
        expected = run(default, token_prompts, cache=cache)
        assert run(sparsed, token_prompts, cache=cache, select=1.0, block_size=16) == expected
        assert run(sparsed, token_prompts, cache=cache, skip=1.0, block_size=16) == expected


def test_sparse_output_does_not_depend_on_batch_company(engines):
    _, sparsed, _ = engines
    token_prompts = prompts(380, [90, 60, 33], seed=22)
    knobs = dict(skip=0.25, select=0.05, block_size=16, isolated=False)
    together = run(sparsed, token_prompts, **knobs)
    assert run(sparsed, token_prompts[1:2], **knobs)[0] == together[1]
    # different block sizes in one batch (masks of 32-blocks are walked as 16-blocks)
    mixed = sparsed.generate(
        [{"prompt_token_ids": p} for p in token_prompts[:2]],
        [SamplingParams(max_tokens=GEN, temperature=0.0, ignore_eos=True,
                        extra_args={"steps": STEPS, "block_length": BLOCK, **knobs, "block_size": bs})
         for bs in (32, 16)],
        use_tqdm=False,
    )
    assert list(mixed[1].outputs[0].token_ids) == together[1]
    assert list(mixed[0].outputs[0].token_ids) == run(sparsed, token_prompts[:1], **{**knobs, "block_size": 32})[0]


@pytest.mark.parametrize("extra, named", [({"select": 0.0}, "select"), ({"skip": 2}, "skip"),
                                          ({"block_size": 24}, "block_size")])
def test_bad_sparsed_knob_is_named_and_the_engine_survives(engines, extra, named):
    _, sparsed, _ = engines
    with pytest.raises(ValueError, match=named):
        run(sparsed, [[5, 6, 7]], **extra)
    assert len(run(sparsed, [[5, 6, 7]])[0]) == GEN


def test_sparsed_knobs_need_the_sparsed_backend(engines):
    default, _, _ = engines
    with pytest.raises(ValueError, match="select.*sparsed"):
        run(default, [[5, 6, 7]], select=0.3)
