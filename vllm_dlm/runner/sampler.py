"""The sampler Model Runner V2 calls after the forward pass: one denoising step per request.

Replaces vLLM's token sampler through `ModelState.custom_sampler`. Inputs: logits of every denoising
request's current block, in `DiffusionLMModelState.denoising_rows` order. Outputs (SamplerOutput):
  sampled_token_ids [num_reqs, max_gen_len]: a block's tokens on the step that completes it
  num_sampled       [num_reqs]: block_length on that step, else 0
  num_rejected      [num_reqs]: the whole query, so the runner's num_computed_tokens stays 0 and the
                    next step recomputes the sequence (cache mode `none`)
The remaining canvas is written to the runner's draft-token buffer, which feeds the next step.
"""

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from vllm.v1.worker.gpu.sample.output import SamplerOutput

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

    penalties_state = _NO_PENALTIES

    def add_request(self, req_idx: int, prompt_len: int, sampling_params: Any) -> None:
        self.sampling_states.add_request(req_idx, sampling_params)

    def apply_staged_writes(self) -> None:
        self.sampling_states.apply_staged_writes()

    def __call__(self, logits: torch.Tensor, input_batch, draft_logits=None) -> SamplerOutput:
        num_reqs = input_batch.num_reqs
        states = self.model_state.requests
        sampled = self._sampled[:num_reqs]
        sampled.zero_()
        num_sampled_np = np.zeros(num_reqs, dtype=np.int32)

        offset = 0
        for row in self.model_state.denoising_rows:
            state = states[int(input_batch.idx_mapping_np[row])]
            block_length = state.block_length
            committed = state.step(logits[offset : offset + block_length])
            offset += block_length
            if committed is not None:
                sampled[row, :block_length] = committed.to(sampled.dtype)
                num_sampled_np[row] = block_length
        self.model_state.denoising_rows = []

        # The next step's canvas, for every request in the batch (new ones included).
        draft_tokens = self.req_states.draft_tokens
        for row in range(num_reqs):
            slot = int(input_batch.idx_mapping_np[row])
            state = states.get(slot)
            if state is not None and state.canvas_length > 0:
                draft_tokens[slot, : state.canvas_length] = state.canvas

        query_lens = np.diff(input_batch.query_start_loc_np[: num_reqs + 1]).astype(np.int32)
        device = logits.device
        return SamplerOutput(
            sampled_token_ids=sampled,
            logprobs_tensors=None,
            num_nans=None,
            num_sampled=torch.from_numpy(num_sampled_np).to(device),
            num_rejected=torch.from_numpy(query_lens).to(device),
        )
