"""Sparse-dLLM eviction through the engine (`sparsed` backend, dual cache): token parity with a
plain-torch re-implementation of Sparse-dLLM's generation, alone and composed with SparseD masks;
keep_ratio 1 is plain dual caching; bad knobs are named."""

import pytest
import torch

from tests.reference.llada import LLaDAReference
from tests.reference.sparse_dllm import sparse_dllm_generate
from tests.reference.sparsed import SparseDModel
from tests.test_parity_llm import prompts
from tests.test_sparsed_engine import BLOCK, GEN, STEPS, run


@pytest.fixture(scope="module")
def ref(tiny_llada):
    return LLaDAReference.from_pretrained(tiny_llada).eval()


def _reference(model, prompt, mask_id, **eviction):
    out = sparse_dllm_generate(model, torch.tensor([prompt]), steps=STEPS, gen_length=GEN,
                               block_length=BLOCK, mask_id=mask_id, **eviction)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("eviction", [dict(keep_ratio=0.5, kernel_size=3, evict_delay=1),
                                      dict(keep_ratio=0.3, kernel_size=1, evict_delay=0)])
def test_eviction_matches_the_sparse_dllm_reference(sparsed_llm, ref, eviction):
    token_prompts = prompts(380, [150, 47, 90], seed=41)
    got = run(sparsed_llm, token_prompts, cache="dual", skip=1.0, **eviction)
    for prompt, tokens in zip(token_prompts, got):
        assert tokens == _reference(ref, prompt, ref.config["mask_token_id"], **eviction)
    assert got != run(sparsed_llm, token_prompts, cache="dual", skip=1.0), "eviction should matter here"


def _page_size(llm) -> int:
    return llm.llm_engine.vllm_config.cache_config.block_size


@pytest.mark.parametrize("variant", [dict(evict_pass="cached"), dict(evict_unit="page"),
                                     dict(evict_pass="cached", evict_unit="page", evict_delay=2)])
def test_cached_selection_and_page_eviction_match_the_reference(sparsed_llm, ref, variant):
    token_prompts = prompts(380, [150, 47, 90], seed=44)
    eviction = {"keep_ratio": 0.5, "kernel_size": 3, "evict_delay": 1, **variant}
    got = run(sparsed_llm, token_prompts, cache="dual", skip=1.0, **eviction)
    page_size = _page_size(sparsed_llm) if variant.get("evict_unit") == "page" else None
    reference = {**eviction, "page_size": page_size}
    reference.pop("evict_unit", None)
    for prompt, tokens in zip(token_prompts, got):
        assert tokens == _reference(ref, prompt, ref.config["mask_token_id"], **reference)
    paper = run(sparsed_llm, token_prompts, cache="dual", skip=1.0, keep_ratio=0.5, kernel_size=3,
                evict_delay=eviction["evict_delay"])
    assert got != paper, "the variant should change this output"


def test_eviction_composed_with_sparsed_matches_the_reference(sparsed_llm, ref):
    token_prompts = prompts(380, [130, 70], seed=42)
    sparsed = dict(skip=0.2, select=0.3, block_size=16)
    got = run(sparsed_llm, token_prompts, cache="dual", keep_ratio=0.5, **sparsed)
    for prompt, tokens in zip(token_prompts, got):
        model = SparseDModel(ref, steps=STEPS, prompt_len=len(prompt), **sparsed)
        assert tokens == _reference(model, prompt, ref.config["mask_token_id"], keep_ratio=0.5)
        assert model.masks, "SparseD never switched on: the composition was not tested"


def test_keep_ratio_one_is_plain_dual_caching(sparsed_llm):
    token_prompts = prompts(380, [60, 25], seed=43)
    dual = run(sparsed_llm, token_prompts, cache="dual", skip=1.0)
    assert run(sparsed_llm, token_prompts, cache="dual", skip=1.0, keep_ratio=1.0, evict_delay=3) == dual
    assert run(sparsed_llm, token_prompts, cache="dual", skip=1.0, keep_ratio=1.0, evict_pass="cached",
               evict_unit="page") == dual


@pytest.mark.parametrize("extra, named", [
    ({"cache": "dual", "keep_ratio": 0.0}, "keep_ratio"),
    ({"cache": "dual", "keep_ratio": 1.5}, "keep_ratio"),
    ({"cache": "dual", "keep_ratio": 0.5, "kernel_size": 2}, "kernel_size"),
    ({"cache": "dual", "keep_ratio": 0.5, "evict_delay": -1}, "evict_delay"),
    ({"keep_ratio": 0.5}, "keep_ratio"),  # cache none
    ({"cache": "prefix", "keep_ratio": 0.5}, "keep_ratio"),
    ({"cache": "dual", "keep_ratio": 0.5, "evict_pass": "half"}, "evict_pass"),
    ({"cache": "dual", "keep_ratio": 0.5, "evict_unit": "block"}, "evict_unit"),
])
def test_bad_eviction_knob_is_named_and_the_engine_survives(sparsed_llm, extra, named):
    with pytest.raises(ValueError, match=named):
        run(sparsed_llm, [[5, 6, 7]], **extra)
    assert len(run(sparsed_llm, [[5, 6, 7]], cache="dual", keep_ratio=0.5)[0]) == GEN
