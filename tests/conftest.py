"""Shared fixtures: tiny random checkpoints in the official layouts and CPU engine settings.

Engine tests start real vLLM engines (Model Runner V2 on CPU under TRITON_INTERPRET=1, through the
plugin's CPU mode); they are module-scoped so each file pays one engine start per model.
"""

import os

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# Kernels called in this process run under Triton's interpreter; the variable must be set before
# Triton is first imported (vLLM's engine processes inherit it from the plugin's CPU mode).
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")

import vllm_dlm  # noqa: E402

# What vLLM does in every process it starts; here so kernels imported by tests see CPU mode.
vllm_dlm.register()

# head_dim must be one vLLM's CPU attention supports (32, 64, ...): hidden 128, 4 heads.
TINY = dict(num_layers=2, hidden_size=128, num_heads=4, intermediate_size=256, max_position=512)
ENGINE_KWARGS = dict(dtype="float32", enforce_eager=True, max_model_len=512, seed=0)


@pytest.fixture(scope="session")
def tiny_llada(tmp_path_factory) -> str:
    from vllm_dlm.tools.tiny_checkpoint import make_tiny_checkpoint

    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("llada"), "llada", seed=0, **TINY))


@pytest.fixture(scope="session")
def tiny_dream(tmp_path_factory) -> str:
    from vllm_dlm.tools.tiny_checkpoint import make_tiny_checkpoint

    return str(
        make_tiny_checkpoint(tmp_path_factory.mktemp("dream"), "dream", seed=1, num_kv_heads=2, **TINY)
    )


@pytest.fixture(scope="session")
def sparsed_llm(tiny_llada):
    """One engine with the `sparsed` backend, shared by the SparseD and eviction test files."""
    from vllm import LLM

    llm = LLM(model=tiny_llada, attention_backend="sparsed", **ENGINE_KWARGS)
    yield llm
    del llm
