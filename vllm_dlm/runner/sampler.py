"""The sampler Model Runner V2 calls after the forward pass: one denoising step per request.

Replaces vLLM's token sampler through `ModelState.custom_sampler`. Inputs: logits of every denoising
request's current block, in `DiffusionLMModelState.denoising_plans` order. Greedy requests step
together (`decoding.batched_step`), the others (sampled rules) one by one. Outputs (SamplerOutput):
  sampled_token_ids [num_reqs, max_gen_len]: a block's tokens on the step that completes it
  num_sampled       [num_reqs]: block_length on that step, else 0
  num_rejected      [num_reqs]: what the runner must roll back so its num_computed_tokens matches the
                    next step: 0 before a full pass (cache `none`, a block just committed, or a
                    wasted step), else the cached prefix (the drafts are never kept)
The remaining canvas is written to the runner's draft-token buffer, which feeds the next step.
"""

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from vllm.v1.worker.gpu.sample.output import SamplerOutput

from vllm_dlm.decoding.batched_step import BatchedRows, denoise_batched, is_batchable
from vllm_dlm.runner.model_state import StepKind

# Greedy requests of a step go through the batched step when there are at least this many (H200,
# `step_breakdown_h200_ab.json`: at batch 64 our sampler takes 5.0 instead of 10.2 ms per step; a
# single request is 0.17 ms quicker on its own).
BATCHED_MIN_REQUESTS = 2

# The runner reads `sampler.penalties_state.output_bin_counts`; None means "no penalties".
_NO_PENALTIES = SimpleNamespace(output_bin_counts=None)


class DiffusionLMSampler:
    def __init__(self, sampler: Any, model_state) -> None:
        self.sampling_states = sampler.sampling_states
        self.req_states = sampler.req_states
        self.model_state = model_state
        max_num_reqs = model_state.max_num_reqs
        width = model_state.vllm_config.num_speculative_tokens
        device = model_state.device
        self._sampled = torch.zeros(max_num_reqs, width, dtype=torch.int32, device=device)
        self._num_sampled = torch.zeros(max_num_reqs, dtype=torch.int32, device=device)
        self._columns = torch.arange(width, device=device)

    penalties_state = _NO_PENALTIES

    def add_request(self, req_idx: int, prompt_len: int, sampling_params: Any) -> None:
        self.sampling_states.add_request(req_idx, sampling_params)

    def apply_staged_writes(self) -> None:
        self.sampling_states.apply_staged_writes()

    def __call__(self, logits: torch.Tensor, input_batch, draft_logits=None) -> SamplerOutput:
        num_reqs = input_batch.num_reqs
        sampled = self._sampled[:num_reqs]
        sampled.zero_()
        num_sampled_np = np.zeros(num_reqs, dtype=np.int32)
        draft_tokens = self.req_states.draft_tokens
        slots = input_batch.idx_mapping_np

        # Greedy requests step together (`decoding.batched_step`), the others one by one.
        batched = BatchedRows([], [], [])
        batched_plans = []
        offset = 0
        for plan in self.model_state.plan:
            if plan.kind not in (StepKind.FULL, StepKind.CACHED):
                continue
            state = plan.state
            if is_batchable(state.params):
                batched.states.append(state)
                batched.slots.append(int(slots[plan.row]))
                batched.offsets.append(offset)
                batched_plans.append(plan)
            else:
                self._step_alone(plan, logits[offset : offset + state.block_length], sampled, num_sampled_np)
            offset += state.block_length
        if len(batched.states) >= BATCHED_MIN_REQUESTS:
            committed, groups = denoise_batched(batched, logits, self.model_state.canvas_store)
            self._emit_batched(batched, batched_plans, committed, groups, sampled, num_sampled_np)
        else:  # the two paths give the same tokens; alone is quicker for a single request
            for plan, offset in zip(batched_plans, batched.offsets):
                self._step_alone(plan, logits[offset : offset + plan.state.block_length], sampled, num_sampled_np)
            batched_plans = []

        query_lens = np.diff(input_batch.query_start_loc_np[: num_reqs + 1]).astype(np.int32)
        num_rejected_np = np.zeros(num_reqs, dtype=np.int32)
        stepped_together = {id(p) for p in batched_plans}
        for plan in self.model_state.plan:
            state, row = plan.state, plan.row
            next_is_full_pass = (
                plan.kind in (StepKind.PREFILL, StepKind.SKIP)
                or state is None
                or state.next_step_is_full_pass()
            )
            if next_is_full_pass:  # roll back everything, including what was cached before
                num_rejected_np[row] = query_lens[row] + plan.num_computed
            else:  # keep the prefix, drop the recomputed canvas
                num_rejected_np[row] = plan.num_drafts - num_sampled_np[row]
            # The next step's canvas. A request stepped together had only its current block
            # written (`_emit_batched`): the rest of its canvas is masks, already in place.
            if state is not None and state.canvas_length > 0 and id(plan) not in stepped_together:
                draft_tokens[int(slots[row]), : state.canvas_length] = state.canvas
        self.model_state.plan = []

        device = logits.device
        return SamplerOutput(
            sampled_token_ids=sampled,
            logprobs_tensors=None,
            num_nans=None,
            num_sampled=torch.from_numpy(num_sampled_np).to(device),
            num_rejected=torch.from_numpy(num_rejected_np).to(device),
        )

    def _step_alone(self, plan, block_logits, sampled, num_sampled_np) -> None:
        committed = plan.state.step(block_logits)
        if committed is not None:
            sampled[plan.row, : plan.state.block_length] = committed.to(sampled.dtype)
            num_sampled_np[plan.row] = plan.state.block_length

    def _emit_batched(self, batched, plans, committed, groups, sampled, num_sampled_np) -> None:
        """Committed blocks into `sampled`; each request's next block into its draft slots (the
        stepped block, or after a commit the next block: all masks). The draft slots after the
        block hold masks since the request's first step, which wrote its whole canvas."""
        draft_tokens = self.req_states.draft_tokens
        for group in groups:
            block_length = group.blocks.shape[1]
            columns = self._columns[:block_length]
            draft_tokens[group.slots[:, None], columns] = group.blocks.to(draft_tokens.dtype)
            done = np.flatnonzero([committed[i] for i in group.members])
            if done.size == 0:
                continue
            rows = np.asarray([plans[group.members[j]].row for j in done])
            num_sampled_np[rows] = block_length
            done_t = _to_device(done, sampled.device)
            sampled[_to_device(rows, sampled.device)[:, None], columns] = group.blocks[done_t].to(sampled.dtype)
            draft_tokens[group.slots[done_t][:, None], columns] = batched.states[group.members[0]].mask_token_id


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(array).to(device, non_blocking=True)
