"""The denoising scheduler: vLLM's scheduler with a dLLM's notion of what must be computed.

Each running request's masked canvas (max_tokens minus the committed tokens) rides on vLLM's
speculative-decoding path as draft tokens: the scheduler gives every request draft slots
(placeholders; the runner fills in the canvas) and a step commits no token unless a block finishes
(`num_sampled_tokens_per_step = 0`). What one step computes depends on the cache mode:

  full pass   prompt + committed + whole canvas, `num_computed_tokens` reset to 0. Every step of
              cache `none`; the first step of each block (the "refresh") for `prefix` / `dual`.
  prefix      canvas only (current block + masked suffix), against the prefix KV the refresh pass
              left in the paged cache.
  dual        current block only, against the cached prefix and the cached suffix (the runner
              extends the attention range over the suffix, `runner.model_state`).

A refresh is due when the request has committed a block since its last full pass, or its KV is gone
(new or preempted request); with Sparse-dLLM eviction (`evict_pass` "full") the first
`evict_delay` + 1 steps of each block are full passes (the last one selects the kept tokens).
Everything else (admission, KV block allocation, preemption, stop checks on committed tokens,
finishing) is vLLM's own. With page eviction (`evict_unit` "page") the pages a block's selection
step leaves dead go back to vLLM's block pool until the next refresh (`engine.evicted_pages`).

With stats on (`vllm serve`), every step and committed block is counted (`DenoisingStats`) and sent
to the front end with vLLM's `SchedulerStats` (`engine.stat_logger` makes the metrics).
"""

from vllm.v1.core.sched.scheduler import Scheduler

from vllm_dlm.config import DecodingParams, resolve_decoding_params
from vllm_dlm.engine.config_hook import server_defaults
from vllm_dlm.engine.denoising_stats import DenoisingStats
from vllm_dlm.engine.evicted_pages import EvictedPages
from vllm_dlm.models import model_family

CANVAS_PLACEHOLDER = -1  # draft ids are never read: the runner keeps the real canvas


class DiffusionScheduler(Scheduler):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_sampled_tokens_per_step = 0  # no bonus token: only finished blocks are emitted
        self._family = model_family(self.vllm_config.model_config.hf_config)
        self._defaults = server_defaults(self.vllm_config)
        self._params: dict[str, DecodingParams] = {}
        # req_id -> (num_output_tokens, full passes so far) for the block of its last full pass
        # (its KV is valid for that block)
        self._refreshed_at: dict[str, tuple[int, int]] = {}
        self._stats = DenoisingStats()
        self._block_steps: dict[str, int] = {}  # req_id -> steps taken in its current block
        self._evicted = EvictedPages(self.kv_cache_manager, self.cache_config.block_size)
        # page-evicting requests: req_id -> whole denoising steps scheduled in its current block
        # (the worker's `step_in_block`), and the requests whose selection step is running
        self._evict_steps: dict[str, int] = {}
        self._selecting: dict[str, tuple[int, int, int, float]] = {}

    def _decoding_params(self, request) -> DecodingParams:
        params = self._params.get(request.request_id)
        if params is None:
            sp = request.sampling_params
            params = resolve_decoding_params(
                self._family, max_tokens=sp.max_tokens, extra_args=sp.extra_args,
                temperature=sp.temperature, top_p=sp.top_p, top_k=sp.top_k, seed=sp.seed,
                defaults=self._defaults,
            )
            self._params[request.request_id] = params
        return params

    def schedule(self, *args, **kwargs):
        full_pass: dict[str, int] = {}
        for request in self.running:
            params = self._decoding_params(request)
            committed = request.num_output_tokens
            canvas_length = max(request.max_tokens - committed, 0)
            block, passes = self._refreshed_at.get(request.request_id, (None, 0))
            refresh = (
                params.cache == "none"
                or block != committed
                or params.eviction.is_full_pass(passes)  # passes >= 1: full passes of this block so far
            )
            if refresh:
                request.num_computed_tokens = 0
                full_pass[request.request_id] = committed
            elif params.cache == "dual":
                canvas_length = min(canvas_length, params.block_length)
            request.spec_token_ids = [CANVAS_PLACEHOLDER] * canvas_length
        output = super().schedule(*args, **kwargs)
        for req_id, committed in full_pass.items():
            request = self.requests[req_id]
            scheduled = output.num_scheduled_tokens.get(req_id, 0)
            if scheduled == request.num_tokens + request.max_tokens - committed:
                block, passes = self._refreshed_at.get(req_id, (None, 0))
                self._refreshed_at[req_id] = (committed, passes + 1 if block == committed else 1)
                self._stats.full_passes += self.log_stats
            else:  # not scheduled, or cut by the token budget: refresh again next step
                self._refreshed_at.pop(req_id, None)
        self._track_selection_steps(output, full_pass)
        self._evicted.send_refilled(output)
        return output

    def _track_selection_steps(self, output, full_pass: dict[str, int]) -> None:
        """Count each page-evicting request's whole denoising steps in its block, as the worker
        does, and note the ones whose step this is the selecting one (step `evict_delay`)."""
        for request in self.running:
            req_id = request.request_id
            params = self._params.get(req_id)
            if params is None or not params.eviction.enabled or params.eviction.evict_unit != "page":
                continue
            scheduled = output.num_scheduled_tokens.get(req_id, 0)
            committed = request.num_output_tokens
            canvas_length = request.max_tokens - committed
            if req_id in full_pass:
                whole = scheduled == request.num_tokens + canvas_length
            else:
                whole = (req_id in output.scheduled_spec_decode_tokens
                         and scheduled == min(canvas_length, params.block_length))
            if not whole:
                continue
            step = self._evict_steps.get(req_id, 0)
            if step == params.eviction.evict_delay:
                self._selecting[req_id] = (request.num_tokens + canvas_length, request.num_tokens,
                                           params.block_length, params.eviction.keep_ratio)
            self._evict_steps[req_id] = step + 1

    def _free_evicted_pages(self, model_runner_output) -> None:
        """After a step: a block that committed starts over; a selection step that did not commit
        its block leaves pages dead for all layers, which go back to the pool."""
        for req_id in list(self._evict_steps):
            index = model_runner_output.req_id_to_index.get(req_id)
            selected = self._selecting.pop(req_id, None)
            if index is not None and len(model_runner_output.sampled_token_ids[index]):
                self._evict_steps[req_id] = 0
            elif selected is not None:
                returned = self._evicted.free_dead(req_id, *selected)
                self._stats.kv_pages_returned += returned * self.log_stats

    def update_from_output(self, scheduler_output, model_runner_output):
        # Steps are counted as their outputs arrive (in order, also with async scheduling, whose
        # one step of lookahead past a request's last block is discarded by vLLM and not counted).
        # A denoising step is one that carried the canvas; the prompt-only first step of a new or
        # resumed request does not. A request emits sampled tokens only when it commits a block.
        if self.log_stats:
            denoised = scheduler_output.scheduled_spec_decode_tokens
            for req_id, index in model_runner_output.req_id_to_index.items():
                if req_id not in self.requests or req_id not in denoised:
                    continue
                steps = self._block_steps.get(req_id, 0) + 1
                self._stats.denoising_steps += 1
                if tokens := len(model_runner_output.sampled_token_ids[index]):
                    self._stats.record_block(steps, tokens)
                    steps = 0
                self._block_steps[req_id] = steps
        self._free_evicted_pages(model_runner_output)
        return super().update_from_output(scheduler_output, model_runner_output)

    def make_stats(self, *args, **kwargs):
        stats = super().make_stats(*args, **kwargs)
        if stats is not None:
            stats.dlm_stats = self._stats.take()
        return stats

    def _forget_eviction(self, req_id: str) -> None:
        self._evict_steps.pop(req_id, None)
        self._selecting.pop(req_id, None)
        self._evicted.forget(req_id)

    def _preempt_request(self, request, timestamp: float) -> None:
        self._forget_eviction(request.request_id)
        self._refreshed_at.pop(request.request_id, None)
        self._block_steps.pop(request.request_id, None)  # it resumes at the start of its block
        super()._preempt_request(request, timestamp)

    def _free_request(self, request, *args, **kwargs):
        self._forget_eviction(request.request_id)
        self._refreshed_at.pop(request.request_id, None)
        self._params.pop(request.request_id, None)
        self._block_steps.pop(request.request_id, None)
        return super()._free_request(request, *args, **kwargs)
