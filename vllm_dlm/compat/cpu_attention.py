"""CPU platform: honour `--attention-backend sparsed`.

Why: vLLM 0.26's `CpuPlatform.get_attn_backend_cls` ignores the selected backend and always returns
CPU_ATTN, so `sparsed` (and its Triton kernels, interpreted) could not run on CPU. Any other choice
still gets CPU_ATTN, which stays the CPU default.

Breaks if: vLLM changes `get_attn_backend_cls`'s signature or stops routing backend selection
through it on CPU.
"""

import functools


def install() -> None:
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.platforms.cpu import CpuPlatform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    stock = CpuPlatform.get_attn_backend_cls.__func__
    if getattr(stock, "_vllm_dlm", False):
        return

    @functools.wraps(stock)
    def get_attn_backend_cls(cls, selected_backend, attn_selector_config, *args, **kwargs):
        if selected_backend == AttentionBackendEnum.CUSTOM:
            return AttentionBackendEnum.CUSTOM.get_path()
        return stock(cls, selected_backend, attn_selector_config, *args, **kwargs)

    get_attn_backend_cls._vllm_dlm = True
    CpuPlatform.get_attn_backend_cls = classmethod(get_attn_backend_cls)
