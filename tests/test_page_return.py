"""Page eviction returns the pages no layer keeps to vLLM's block pool (`engine.evicted_pages`):
under a fixed, tight KV pool more requests run at once than their whole sequences would fit, the
freed pages are refilled at each refresh (preempting when the pool is short, as vLLM does), and the
output equals the plain-torch Sparse-dLLM reference (page eviction, cached selection), token for
token."""

import os

import pytest
import torch
from vllm import LLM, SamplingParams

from tests.conftest import ENGINE_KWARGS
from tests.reference.llada import LLaDAReference
from tests.reference.sparse_dllm import sparse_dllm_generate
from tests.test_parity_llm import prompts

PAGE, GEN, BLOCK, STEPS = 16, 32, 16, 16
PAGE_EVICTION = {"cache": "dual", "skip": 1.0, "keep_ratio": 0.5, "evict_pass": "cached",
                 "evict_unit": "page"}
POOL_PAGES = 16


def _params():
    return SamplingParams(max_tokens=GEN, temperature=0.0, ignore_eos=True,
                          extra_args={"steps": STEPS, "block_length": BLOCK, **PAGE_EVICTION})


@pytest.fixture(scope="module")
def tight_llm(tiny_llada):
    """The engine core in this process (to watch its scheduler), a pool of POOL_PAGES pages."""
    previous = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        llm = LLM(model=tiny_llada, attention_backend="sparsed", block_size=PAGE,
                  num_gpu_blocks_override=POOL_PAGES, **{**ENGINE_KWARGS, "max_model_len": 128})
    finally:
        if previous is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING")
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = previous
    yield llm
    del llm


def _step_all(llm, token_prompts):
    """Run the requests to completion -> (outputs in order, most pages the running requests' whole
    sequences would take in one step, pages the scheduler returned, preemptions)."""
    engine = llm.llm_engine
    scheduler = engine.engine_core.engine_core.scheduler
    freed_before = scheduler._evicted.pages_freed
    for i, prompt in enumerate(token_prompts):
        engine.add_request(str(i), {"prompt_token_ids": prompt}, _params())
    outputs, most, preempted = {}, 0, {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                outputs[int(out.request_id)] = list(out.outputs[0].token_ids)
        whole = sum(-(-(r.num_prompt_tokens + GEN) // PAGE) for r in scheduler.running)
        most = max(most, whole)
        for request in [*scheduler.running, *scheduler.waiting]:
            preempted[request.request_id] = request.num_preemptions
    assert not scheduler._evicted.holes, "a finished request left holes behind"
    return ([outputs[i] for i in range(len(token_prompts))], most,
            scheduler._evicted.pages_freed - freed_before, sum(preempted.values()))


def test_freed_pages_let_more_requests_run_with_the_same_output(tiny_llada, tight_llm):
    token_prompts = prompts(380, [40, 35, 44, 38, 42], seed=51)
    got, most, freed, preemptions = _step_all(tight_llm, token_prompts)
    ref = LLaDAReference.from_pretrained(tiny_llada).eval()
    eviction = {k: v for k, v in PAGE_EVICTION.items() if k in ("keep_ratio", "evict_pass")}
    for prompt, tokens in zip(token_prompts, got):
        expected = sparse_dllm_generate(ref, torch.tensor([prompt]), steps=STEPS, gen_length=GEN,
                                        block_length=BLOCK, mask_id=ref.config["mask_token_id"],
                                        kernel_size=3, evict_delay=1, page_size=PAGE, **eviction)
        assert tokens == expected[0, len(prompt):].tolist()
    assert freed > 0, "no page went back to the pool"
    # Each whole sequence takes 5 pages (3 live after selection): without returned pages at most
    # 3 fit in the pool.
    assert most > POOL_PAGES, f"requests running at once needed {most} pages whole, pool {POOL_PAGES}"
    print(f"page return: {freed} pages freed, peak whole-sequence demand {most} of {POOL_PAGES} pages, "
          f"{preemptions} preemptions")
