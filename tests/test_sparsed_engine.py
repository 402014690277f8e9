"""SparseD through the engine (`attention_backend="sparsed"`, cache `none`): dense parity when
nothing is dropped, and sparse masks that change the output only when they drop blocks."""

import pytest
from vllm import LLM, SamplingParams

from tests.conftest import ENGINE_KWARGS
from tests.test_parity_llm import prompts


@pytest.fixture(scope="module")
def engines(tiny_llada):
    default = LLM(model=tiny_llada, **ENGINE_KWARGS)
    sparsed = LLM(model=tiny_llada, attention_backend="sparsed", **ENGINE_KWARGS)
    yield default, sparsed


def _run(llm, token_prompts, **extra):
    sp = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True,
                        extra_args={"steps": 16, "block_length": 16, **extra})
    return [list(o.outputs[0].token_ids) for o in llm.generate(token_prompts, sp, use_tqdm=False)]


def test_select_one_and_skip_one_equal_the_default_backend(engines):
    default, sparsed = engines
    token_prompts = [{"prompt_token_ids": p} for p in prompts(380, [40, 70, 9], seed=21)]
    expected = _run(default, token_prompts)
    assert _run(sparsed, token_prompts, select=1.0, block_size=16) == expected
    assert _run(sparsed, token_prompts, skip=1.0, select=0.2, block_size=16) == expected
    assert _run(sparsed, token_prompts, skip=0.2, select=0.99, block_size=16) == expected


def test_sparse_masks_are_used_after_the_switch_step(engines):
    """With a tiny select the masks keep one or two key blocks per query block: the output must
    differ from dense (masks applied), be deterministic, and not depend on batch company."""
    default, sparsed = engines
    token_prompts = [{"prompt_token_ids": p} for p in prompts(380, [90, 60], seed=22)]
    dense = _run(default, token_prompts)
    sparse = _run(sparsed, token_prompts, skip=0.25, select=0.05, block_size=16, isolated=False)
    assert sparse != dense
    assert _run(sparsed, token_prompts, skip=0.25, select=0.05, block_size=16, isolated=False) == sparse
    alone = _run(sparsed, token_prompts[1:], skip=0.25, select=0.05, block_size=16, isolated=False)
    assert alone[0] == sparse[1]
