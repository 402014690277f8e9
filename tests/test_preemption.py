"""Under KV-cache pressure requests are preempted and recomputed (vLLM's own policy); greedy output
must equal an unpressured run, in every cache mode (cf. vLLM #47464, a diffusion preemption crash)."""

import pytest
from vllm import LLM, SamplingParams

from tests.conftest import ENGINE_KWARGS
from tests.test_parity_llm import prompts


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_preempted_requests_reproduce_unpressured_output(tiny_llada, cache):
    token_prompts = [{"prompt_token_ids": p} for p in prompts(380, [100, 90, 110, 95], seed=11)]
    params = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True,
                            extra_args={"steps": 16, "block_length": 16, "cache": cache})
    roomy = LLM(model=tiny_llada, **ENGINE_KWARGS)
    expected = [list(o.outputs[0].token_ids) for o in roomy.generate(token_prompts, params, use_tqdm=False)]
    del roomy
    # 4 pages of 128 tokens: each prompt fits one page, but prompt + canvas needs two.
    tight = LLM(model=tiny_llada, num_gpu_blocks_override=4, block_size=128,
                disable_log_stats=False, **ENGINE_KWARGS)
    outs = tight.generate(token_prompts, params, use_tqdm=False)
    preemptions = sum(m.value for m in tight.get_metrics() if m.name == "vllm:num_preemptions")
    assert preemptions > 0, "the test must actually preempt"
    assert [list(o.outputs[0].token_ids) for o in outs] == expected
    del tight
