"""Engine-side denoising counters, handed to the front end with each `SchedulerStats`.

`DiffusionScheduler` records every scheduled denoising step (and whether it was a full pass, i.e.
a cache refresh or an eviction-selection pass) and every committed block (how many steps it took,
how many tokens it committed), and the KV-cache pages page eviction returned to the pool. `take()` returns what accumulated since the last call as the
`dlm_stats` payload (`vllm_dlm.compat.scheduler_stats`) and starts a new interval;
`vllm_dlm.engine.stat_logger.DiffusionStatLogger` turns it into Prometheus metrics and log lines.
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DenoisingStats:
    denoising_steps: int = 0  # request-steps: one per request per forward pass
    full_passes: int = 0  # of which recomputed the whole sequence (refresh / selection)
    kv_pages_returned: int = 0  # KV-cache pages page eviction gave back to vLLM's block pool
    blocks: list[tuple[int, int]] = field(default_factory=list)  # (steps, tokens) per committed block

    def record_block(self, steps: int, tokens: int) -> None:
        self.blocks.append((steps, tokens))

    def take(self) -> dict[str, Any]:
        payload = {"denoising_steps": self.denoising_steps, "full_passes": self.full_passes,
                   "kv_pages_returned": self.kv_pages_returned, "blocks": [list(b) for b in self.blocks]}
        self.denoising_steps, self.full_passes, self.kv_pages_returned, self.blocks = 0, 0, 0, []
        return payload
