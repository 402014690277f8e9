"""Everything that touches vLLM 0.26 internals beyond its public plugin points.

One module per patch; each states why it exists and what would break it. `apply_all()` is called by
`vllm_dlm.register()` in every vLLM process and is idempotent.
"""

_applied = False


def apply_all() -> None:
    global _applied
    if _applied:
        return
    from vllm_dlm.compat import (
        block_overwrite,
        cpu_attention,
        cpu_triton,
        openai_knobs,
        request_validation,
        scheduler_stats,
        warmup_limits,
    )

    cpu_triton.enable_if_cpu()
    cpu_attention.install()
    block_overwrite.install()
    request_validation.install()
    openai_knobs.install()
    scheduler_stats.install()
    warmup_limits.install()
    _applied = True
