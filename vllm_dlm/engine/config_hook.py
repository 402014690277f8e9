"""Engine settings for LLaDA/Dream, applied through vLLM's per-architecture config hook
(`MODELS_CONFIG_MAP`, the mechanism DiffusionGemma uses).

- Canvas: `DiffusionConfig(canvas_length=max_gen_len)` sizes vLLM's draft-token path, which carries
  each request's masked canvas (up to `max_gen_len` = `additional_config["dlm"]["max_gen_len"]`,
  default min(1024, max_model_len)).
- The denoising scheduler (`engine.scheduler.DiffusionScheduler`) decides per step what is
  recomputed; it needs the previous step's outcome, so async scheduling is off.
- Prefix caching is off: a token's KV depends on the tokens after it (bidirectional attention).
- A request's full pass (prompt + generation) is never chunked: chunked prefill is off and the
  token budget holds at least one max_model_len sequence.
- CUDA graphs are piecewise only (attention runs eagerly between graphs): full-batch graphs would
  need fixed query shapes, while a dLLM step's shape depends on each request's cache mode and block.
"""

from vllm.config.compilation import CUDAGraphMode
from vllm.logger import init_logger
from vllm.model_executor.models.config import VerifyAndUpdateConfig

from vllm_dlm.config import DEFAULT_MAX_GEN_LEN, ServerDefaults, parse_server_defaults

logger = init_logger(f"vllm.dlm.{__name__}")

SCHEDULER_CLS = "vllm_dlm.engine.scheduler.DiffusionScheduler"
DEFAULT_MAX_NUM_SEQS = 64


def server_defaults(vllm_config) -> ServerDefaults:
    defaults = parse_server_defaults(vllm_config.additional_config)
    max_len = vllm_config.model_config.max_model_len
    if "max_gen_len" not in (vllm_config.additional_config or {}).get("dlm", {}):
        defaults = ServerDefaults(**{**defaults.__dict__, "max_gen_len": min(DEFAULT_MAX_GEN_LEN, max_len)})
    return defaults


class DiffusionLMConfig(VerifyAndUpdateConfig):
    @classmethod
    def verify_and_update_config(cls, vllm_config) -> None:
        from vllm.config.diffusion import DiffusionConfig
        from vllm.config.scheduler import SchedulerConfig

        defaults = server_defaults(vllm_config)
        # Front-end request validation reads the server defaults from here.
        vllm_config.model_config.hf_config.dlm_server_defaults = defaults
        vllm_config.diffusion_config = DiffusionConfig(canvas_length=defaults.max_gen_len)

        sched = vllm_config.scheduler_config
        sched.scheduler_cls = SCHEDULER_CLS
        sched.async_scheduling = False
        sched.enable_chunked_prefill = False
        max_len = vllm_config.model_config.max_model_len
        if sched.max_num_batched_tokens < max_len:
            sched.max_num_batched_tokens = max_len
            sched.max_num_scheduled_tokens = max_len
        if sched.max_num_seqs >= SchedulerConfig.DEFAULT_MAX_NUM_SEQS:
            sched.max_num_seqs = DEFAULT_MAX_NUM_SEQS
        vllm_config.cache_config.enable_prefix_caching = False
        if vllm_config.compilation_config.cudagraph_mode != CUDAGraphMode.NONE:
            vllm_config.compilation_config.cudagraph_mode = CUDAGraphMode.PIECEWISE
        if not vllm_config.use_v2_model_runner:
            raise ValueError(
                "vllm-dlm needs Model Runner V2 (its ModelState hooks); do not set "
                "VLLM_USE_V2_MODEL_RUNNER=0 for LLaDA/Dream"
            )
        logger.info(
            "vllm-dlm: diffusion decoding with canvas up to %d tokens, max_num_seqs=%d",
            defaults.max_gen_len,
            sched.max_num_seqs,
        )
