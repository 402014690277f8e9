"""VLLM_DLM_KERNELS=torch (the kernels' plain-torch twins, for fast CPU runs) gives the Triton
kernels' tokens through the engine: SparseD (none, dual), eviction composed with SparseD."""

import os

import pytest

from tests.conftest import ENGINE_KWARGS
from tests.test_parity_llm import prompts
from tests.test_sparsed_engine import run

CASES = [dict(cache="none", skip=0.2, select=0.3, block_size=16),
         dict(cache="dual", skip=0.2, select=0.3, block_size=16),
         dict(cache="dual", keep_ratio=0.5, skip=0.2, select=0.3, block_size=16)]


@pytest.fixture(scope="module")
def torch_llm(tiny_llada):
    from vllm import LLM

    os.environ["VLLM_DLM_KERNELS"] = "torch"  # read by the engine's worker process at import
    try:
        llm = LLM(model=tiny_llada, attention_backend="sparsed", **ENGINE_KWARGS)
    finally:
        del os.environ["VLLM_DLM_KERNELS"]
    yield llm
    del llm


@pytest.mark.parametrize("knobs", CASES)
def test_torch_twins_give_the_triton_kernels_tokens(sparsed_llm, torch_llm, knobs):
    token_prompts = prompts(380, [130, 70], seed=43)
    assert run(torch_llm, token_prompts, **knobs) == run(sparsed_llm, token_prompts, **knobs)


def test_unknown_kernel_choice_is_a_clear_error():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import vllm_dlm.attention.impl"], capture_output=True,
                          text=True, env={**os.environ, "VLLM_DLM_KERNELS": "cuda"})
    assert proc.returncode != 0 and "VLLM_DLM_KERNELS must be 'triton' or 'torch'" in proc.stderr
