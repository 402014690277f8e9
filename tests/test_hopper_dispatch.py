"""The `sparsed` backend's Hopper dispatch through the engine, on CPU: with VLLM_DLM_FA3=twin, FA3's
torch twin stands in for FlashAttention-3, so the GPU-only branches of `attention.impl` run here:
dense steps on FA3, SparseD on FA3 virtual sequences built once per step for all layers (full
passes, prefix and dual cached steps, the switch step's log-sum-exp), page eviction on per-layer FA3
page tables. Their tokens must equal the Triton-kernel path's, which the reference tests pin
(VLLM_DLM_KERNELS=torch runs the remaining kernels' twins, tested equal in test_torch_kernels)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ENGINE_KWARGS
from tests.test_parity_llm import prompts
from tests.test_sparsed_engine import run

PAGE = 16  # vLLM's page size on the GPU (the CPU default, 128, is larger than SparseD's blocks here)
SPARSED = dict(skip=0.2, select=0.3, block_size=16)
CASES = [
    dict(cache="dual", skip=1.0),  # dense steps only
    dict(cache="none", **SPARSED),  # full passes on virtual sequences
    dict(cache="prefix", **SPARSED),
    dict(cache="dual", **SPARSED),
]


@pytest.fixture(scope="module")
def hopper_llm(tiny_llada):
    from vllm import LLM

    env = {"VLLM_DLM_FA3": "twin", "VLLM_DLM_KERNELS": "torch"}  # read by the engine's worker
    os.environ.update(env)
    try:
        llm = LLM(model=tiny_llada, attention_backend="sparsed", block_size=PAGE, **ENGINE_KWARGS)
    finally:
        for name in env:
            del os.environ[name]
    assert llm.llm_engine.vllm_config.cache_config.block_size == PAGE
    yield llm
    del llm


@pytest.mark.parametrize("knobs", CASES)
def test_hopper_dispatch_gives_the_triton_paths_tokens(sparsed_llm, hopper_llm, knobs):
    token_prompts = prompts(380, [130, 70, 150], seed=45)
    assert run(hopper_llm, token_prompts, **knobs) == run(sparsed_llm, token_prompts, **knobs)


def test_page_eviction_on_fa3_page_tables_matches_the_reference(hopper_llm, tiny_llada):
    """Kept whole pages on per-layer FA3 block tables vs Sparse-dLLM's generation keeping the same
    pages (the reference at this page size)."""
    from tests.reference.llada import LLaDAReference
    from tests.test_eviction_engine import _reference

    ref = LLaDAReference.from_pretrained(tiny_llada).eval()
    token_prompts = prompts(380, [150, 47, 90], seed=44)
    eviction = dict(keep_ratio=0.5, kernel_size=3, evict_delay=1)
    got = run(hopper_llm, token_prompts, cache="dual", skip=1.0, evict_pass="cached", evict_unit="page",
              **eviction)
    for prompt, tokens in zip(token_prompts, got):
        assert tokens == _reference(ref, prompt, ref.config["mask_token_id"], evict_pass="cached",
                                    page_size=PAGE, **eviction)


def test_unknown_fa3_choice_is_a_clear_error():
    proc = subprocess.run([sys.executable, "-c", "import vllm_dlm.attention.impl"], capture_output=True,
                          text=True, env={**os.environ, "VLLM_DLM_FA3": "yes"})
    assert proc.returncode != 0 and "VLLM_DLM_FA3 must be 'auto' or 'twin'" in proc.stderr
