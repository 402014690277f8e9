"""vllm-dlm: diffusion LLMs (LLaDA, Dream) in vLLM.

`register()` is the `vllm.general_plugins` entry point: vLLM calls it in every process it starts.
It is idempotent and imports vLLM lazily.
"""

__version__ = "0.1.0"

_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    from vllm_dlm.plugin import register_all

    register_all()
    _registered = True
