"""The denoising scheduler: vLLM's scheduler with a dLLM's notion of what must be recomputed.

A request's KV depends on every token of its sequence, masked canvas included, so in cache mode
`none` each step recomputes the whole sequence: before scheduling, every running request's
`num_computed_tokens` is reset to 0 and vLLM's scheduler then schedules prompt + committed tokens +
the canvas (carried as draft tokens). Everything else (admission, KV block allocation, preemption,
stop checks on committed tokens, finishing) is vLLM's own.
"""

from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.outputs import DraftTokenIds


class DiffusionScheduler(Scheduler):
    def schedule(self, *args, **kwargs):
        for request in self.running:
            request.num_computed_tokens = 0
        return super().schedule(*args, **kwargs)

    def update_draft_token_ids(self, draft_token_ids: DraftTokenIds) -> None:
        """The runner reports a full-width canvas per request; keep each request's real length
        (max_tokens minus what is committed), which is what the next step must schedule."""
        trimmed = []
        for req_id, tokens in zip(draft_token_ids.req_ids, draft_token_ids.draft_token_ids):
            request = self.requests.get(req_id)
            remaining = 0
            if request is not None and not request.is_finished():
                remaining = max(request.max_tokens - request.num_output_tokens, 0)
            trimmed.append(list(tokens[:remaining]))
        super().update_draft_token_ids(DraftTokenIds(draft_token_ids.req_ids, trimmed))
