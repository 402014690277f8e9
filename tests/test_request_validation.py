"""Bad knobs fail at admission with the parameter named; the engine keeps serving."""

import pytest
from vllm import LLM, SamplingParams

from tests.conftest import ENGINE_KWARGS


@pytest.fixture(scope="module")
def llm(tiny_llada):
    engine = LLM(model=tiny_llada, **ENGINE_KWARGS)
    yield engine
    del engine


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(max_tokens=16, extra_args={"bogus": 1}), "bogus"),
        (dict(max_tokens=16, extra_args={"steps": 3, "block_length": 8}), "steps"),
        (dict(max_tokens=20, extra_args={"block_length": 8}), "block_length"),
        (dict(max_tokens=16, extra_args={"remasking": "entropy"}), "remasking"),
        (dict(max_tokens=16, extra_args={"cache": "bogus"}), "cache"),
        (dict(max_tokens=16, extra_args={"threshold": 0.9, "remasking": "random"}), "threshold"),
        (dict(max_tokens=16, extra_args={"threshold": 1.5}), "threshold"),
        (dict(max_tokens=16, logprobs=2), "logprobs"),
        (dict(max_tokens=512, extra_args={"block_length": 512}), "max_model_len"),
        (dict(max_tokens=600), "max_gen_len"),
    ],
)
def test_bad_request_raises_naming_parameter_and_engine_survives(llm, kwargs, named):
    with pytest.raises(ValueError, match=named):
        llm.generate([{"prompt_token_ids": [5, 6, 7]}], SamplingParams(**kwargs), use_tqdm=False)
    ok = llm.generate(
        [{"prompt_token_ids": [5, 6, 7]}],
        SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, extra_args={"steps": 4}),
        use_tqdm=False,
    )
    assert len(ok[0].outputs[0].token_ids) == 8


def test_greedy_temperature_zero_and_seed_are_accepted(llm):
    """vLLM's stock diffusion validation (temperature must be 1, no seed) does not apply."""
    out = llm.generate(
        [{"prompt_token_ids": [5, 6, 7]}],
        SamplingParams(max_tokens=8, temperature=0.0, seed=3, ignore_eos=True),
        use_tqdm=False,
    )
    assert len(out[0].outputs[0].token_ids) == 8
