"""The denoising scheduler: vLLM's scheduler with a dLLM's notion of what must be computed.

Each running request's masked canvas (max_tokens minus the committed tokens) rides on vLLM's
speculative-decoding path as draft tokens: the scheduler gives every request that many draft slots
(placeholders; the runner fills in the canvas) and a step commits no token unless a block finishes
(`num_sampled_tokens_per_step = 0`). A request's KV depends on every token of its sequence, masked
canvas included, so in cache mode `none` each step recomputes the whole sequence: before scheduling,
`num_computed_tokens` is reset to 0 and vLLM's scheduler then schedules prompt + committed tokens +
canvas. Everything else (admission, KV block allocation, preemption, stop checks on committed
tokens, finishing) is vLLM's own.
"""

from vllm.v1.core.sched.scheduler import Scheduler

CANVAS_PLACEHOLDER = -1  # draft ids are never read: the runner keeps the real canvas


class DiffusionScheduler(Scheduler):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_sampled_tokens_per_step = 0  # no bonus token: only finished blocks are emitted

    def schedule(self, *args, **kwargs):
        for request in self.running:
            request.num_computed_tokens = 0
            canvas_length = max(request.max_tokens - request.num_output_tokens, 0)
            request.spec_token_ids = [CANVAS_PLACEHOLDER] * canvas_length
        return super().schedule(*args, **kwargs)
