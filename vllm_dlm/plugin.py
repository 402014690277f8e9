"""What `vllm_dlm.register()` installs into vLLM (kept out of `__init__` so importing the package
stays cheap): HF configs, model classes, their engine config hook, and the compat patches."""

from vllm_dlm.models import ARCHITECTURES


def register_all() -> None:
    from transformers import AutoConfig
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from vllm_dlm import attention, compat
    from vllm_dlm.engine.config_hook import DiffusionLMConfig
    from vllm_dlm.models.configs import DreamConfig, LLaDAConfig

    compat.apply_all()
    attention.register()
    for config_cls in (LLaDAConfig, DreamConfig):
        try:
            AutoConfig.register(config_cls.model_type, config_cls)
        except ValueError:
            pass  # already registered in this process
    supported = ModelRegistry.get_supported_archs()
    for arch, (module, cls_name, _family) in ARCHITECTURES.items():
        if arch not in supported:
            ModelRegistry.register_model(arch, f"{module}:{cls_name}")
        MODELS_CONFIG_MAP[arch] = DiffusionLMConfig
