"""The `sparsed` attention backend (see backend.py)."""


def register() -> None:
    """Make `sparsed` a name vLLM's `--attention-backend` accepts (alias of the CUSTOM member, which
    survives the engine process spawn where a new enum member would not) and point it here."""
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    AttentionBackendEnum._member_map_.setdefault("SPARSED", AttentionBackendEnum.CUSTOM)
    register_backend(AttentionBackendEnum.CUSTOM, "vllm_dlm.attention.backend.SparsedBackend")
