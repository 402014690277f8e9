"""Front-end stat logger for the denoising metrics (entry point `vllm.stat_logger_plugins`).

vLLM builds it next to its own loggers in the API server (`vllm serve`, AsyncLLM with stats on)
and calls `record()` with each `SchedulerStats`; ours reads the `dlm_stats` payload the
engine-core scheduler attached (`vllm_dlm.engine.denoising_stats`). Exposed on `/metrics`, labelled
like vLLM's own (`model_name`, `engine`):

  vllm:dlm_denoising_steps_total       request-steps (one per request per forward pass)
  vllm:dlm_full_passes_total           of which full passes (cache refreshes, eviction selection)
  vllm:dlm_blocks_committed_total      blocks committed
  vllm:dlm_kv_pages_returned_total     KV-cache pages page eviction gave back to the block pool
  vllm:dlm_steps_per_block             histogram, denoising steps each committed block took
  vllm:dlm_tokens_per_step             histogram, per committed block: its tokens / its steps

`log()` adds one line per interval to vLLM's periodic stats log when anything was denoised.
Requests without a diffusion model never carry a payload, so the logger is inert for them.
"""

from prometheus_client import REGISTRY, Counter, Histogram
from vllm.logger import init_logger
from vllm.v1.metrics.loggers import StatLoggerBase

logger = init_logger(__name__)

STEP_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
TOKENS_PER_STEP_BUCKETS = [0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 32]
_METRICS: dict[str, object] = {}  # one set per process: vLLM may build several loggers


def _metrics() -> dict[str, object]:
    """Created on first use, i.e. after vLLM's PrometheusStatLogger has unregistered stale `vllm:`
    collectors at its construction (which would otherwise drop ours)."""
    if not _METRICS:
        labels = ["model_name", "engine"]
        for name in ("vllm:dlm_denoising_steps", "vllm:dlm_full_passes",
                     "vllm:dlm_blocks_committed", "vllm:dlm_kv_pages_returned", "vllm:dlm_steps_per_block",
                     "vllm:dlm_tokens_per_step"):
            stale = REGISTRY._names_to_collectors.get(name) or REGISTRY._names_to_collectors.get(
                name + "_total")
            if stale is not None:
                REGISTRY.unregister(stale)
        _METRICS.update(
            steps=Counter("vllm:dlm_denoising_steps", "Denoising request-steps (one per request "
                          "per forward pass).", labels),
            full=Counter("vllm:dlm_full_passes", "Denoising steps that recomputed the whole "
                         "sequence (cache refresh or eviction selection).", labels),
            blocks=Counter("vllm:dlm_blocks_committed", "Blocks committed.", labels),
            pages=Counter("vllm:dlm_kv_pages_returned", "KV-cache pages page eviction returned "
                          "to vLLM's block pool (refilled at each block's refresh).", labels),
            steps_per_block=Histogram("vllm:dlm_steps_per_block", "Denoising steps each "
                                      "committed block took.", labels, buckets=STEP_BUCKETS),
            tokens_per_step=Histogram("vllm:dlm_tokens_per_step", "Tokens committed per "
                                      "denoising step, per committed block.", labels,
                                      buckets=TOKENS_PER_STEP_BUCKETS),
        )
    return _METRICS


class DiffusionStatLogger(StatLoggerBase):
    def __init__(self, vllm_config, engine_index: int = 0):
        self.labels = (str(vllm_config.model_config.served_model_name), str(engine_index))
        self.engine_index = engine_index
        self._reset()

    def _reset(self) -> None:
        self.steps = self.full = self.block_steps = self.block_tokens = self.blocks = 0

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
        payload = getattr(scheduler_stats, "dlm_stats", None)
        if not payload:
            return
        m = _metrics()
        steps, full, blocks = payload["denoising_steps"], payload["full_passes"], payload["blocks"]
        m["steps"].labels(*self.labels).inc(steps)
        m["full"].labels(*self.labels).inc(full)
        m["blocks"].labels(*self.labels).inc(len(blocks))
        m["pages"].labels(*self.labels).inc(payload.get("kv_pages_returned", 0))
        for block_steps, tokens in blocks:
            m["steps_per_block"].labels(*self.labels).observe(block_steps)
            m["tokens_per_step"].labels(*self.labels).observe(tokens / max(block_steps, 1))
            self.block_steps += block_steps
            self.block_tokens += tokens
        self.steps += steps
        self.full += full
        self.blocks += len(blocks)

    def log(self) -> None:
        if self.steps:
            logger.info(
                "Engine %03d: dLLM denoising: %d request-steps (%d full passes), %d blocks "
                "committed, %.1f steps/block, %.2f tokens/step",
                self.engine_index, self.steps, self.full, self.blocks,
                self.block_steps / max(self.blocks, 1), self.block_tokens / max(self.block_steps, 1))
        self._reset()

    def log_engine_initialized(self) -> None:
        pass
