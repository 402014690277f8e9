"""dLLM model classes and their HF configs.

`ARCHITECTURES` maps the official `architectures` names to (module, class, family); the family
picks the decoding schedule (`vllm_dlm.decoding`).
"""

ARCHITECTURES = {
    "LLaDAModelLM": ("vllm_dlm.models.llada", "LLaDAModelLM", "llada"),
    "DreamModel": ("vllm_dlm.models.dream", "DreamModel", "dream"),
}


def model_family(hf_config) -> str | None:
    """'llada' | 'dream' for a checkpoint this plugin serves, else None."""
    for arch in getattr(hf_config, "architectures", None) or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch][2]
    return None
