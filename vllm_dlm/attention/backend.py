"""The `sparsed` attention backend: what it supports and where its parts live.

Selected with `--attention-backend sparsed` / `LLM(attention_backend="sparsed")`. vLLM parses that
flag into its fixed `AttentionBackendEnum`; the plugin makes `SPARSED` an alias of the `CUSTOM`
member and registers this class for it (`vllm_dlm.attention.register`); on the CPU platform the
choice is honoured too (`compat.cpu_attention`).

KV cache: vLLM's standard packed layout [num_pages, num_kv_heads, page_size, 2 * head_dim] (K in the
first head_dim, V in the second), the one its FlashAttention backend uses, so dense steps can run on
FA3. SparseD masks and Sparse-dLLM kept tokens live beside it, per request (`sparsity/`); the
per-layer dispatch is in `impl.py`.
"""

from typing import ClassVar

import torch

from vllm.v1.attention.backend import AttentionBackend, AttentionType, MultipleOf


class SparsedBackend(AttentionBackend):
    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float16, torch.bfloat16, torch.float32]
    supported_kv_cache_dtypes: ClassVar[list] = ["auto", "float16", "bfloat16", "float32"]
    forward_includes_kv_cache_update: bool = True

    @staticmethod
    def get_name() -> str:
        return "CUSTOM"

    @staticmethod
    def get_impl_cls():
        from vllm_dlm.attention.impl import SparsedImpl

        return SparsedImpl

    @staticmethod
    def get_builder_cls():
        from vllm_dlm.attention.metadata import SparsedMetadataBuilder

        return SparsedMetadataBuilder

    @staticmethod
    def get_supported_kernel_block_sizes() -> list:
        return [MultipleOf(16)]

    @staticmethod
    def get_kv_cache_shape(num_blocks, block_size, num_kv_heads, head_size, cache_dtype_str="auto"):
        return (num_blocks, num_kv_heads, block_size, 2 * head_size)

    @classmethod
    def get_supported_head_sizes(cls) -> list[int]:
        return [32, 48, 64, 80, 96, 128, 160, 192, 256]

    @classmethod
    def supports_non_causal(cls) -> bool:
        return True

    @classmethod
    def supports_attn_type(cls, attn_type: str) -> bool:
        return attn_type == AttentionType.DECODER

    @staticmethod
    def use_cascade_attention(*args, **kwargs) -> bool:
        return False
