"""Model Runner V2 hooks for LLaDA and Dream.

Data flow of one engine step (cache mode `none`), per request:
  scheduler  -> query = prompt + committed tokens + canvas, all recomputed (num_computed reset to 0,
                `engine.scheduler.DiffusionScheduler`); the canvas rides on vLLM's draft-token slots
  runner     -> input ids: prompt/committed from `all_token_ids`, canvas from `draft_tokens`
  prepare_inputs (here) -> logits only at the current block's positions (Dream: shifted by one)
  prepare_attn   (here) -> bidirectional attention over the request's own tokens
  sampler        (`runner.sampler`) -> one denoising step per request; a finished block is emitted
"""

from typing import Any

import numpy as np
import torch

from vllm.config.compilation import CUDAGraphMode
from vllm.logger import init_logger
from vllm.v1.worker.gpu.attn_utils import build_attn_metadata
from vllm.v1.worker.gpu.model_states.default import DefaultModelState

from vllm_dlm.config import resolve_decoding_params
from vllm_dlm.decoding.state import RequestDecodeState
from vllm_dlm.engine.config_hook import server_defaults
from vllm_dlm.models import model_family

logger = init_logger(__name__)


class DiffusionLMModelState(DefaultModelState):
    def __init__(self, vllm_config, model, encoder_cache, device) -> None:
        super().__init__(vllm_config, model, encoder_cache, device)
        hf_config = self.model_config.hf_config
        self.family = model_family(hf_config)
        self.mask_token_id = int(hf_config.mask_token_id)
        # Dream predicts position i from hidden state i-1.
        self.logits_shift = 1 if self.family == "dream" else 0
        self.defaults = server_defaults(vllm_config)
        self.requests: dict[int, RequestDecodeState] = {}  # req_states slot -> state
        self._slot_of: dict[str, int] = {}
        # Batch rows whose current-block logits this step computes, in logits order.
        self.denoising_rows: list[int] = []

    def get_supported_generation_tasks(self):
        return ("generate",)

    def custom_sampler(self, sampler: Any):
        from vllm_dlm.runner.sampler import DiffusionLMSampler

        return DiffusionLMSampler(sampler, self), None

    def add_request(self, req_index: int, new_req_data) -> None:
        super().add_request(req_index, new_req_data)
        sp = new_req_data.sampling_params
        if sp is None:
            return
        params = resolve_decoding_params(
            self.family,
            max_tokens=sp.max_tokens,
            extra_args=sp.extra_args,
            temperature=sp.temperature,
            top_p=sp.top_p,
            top_k=sp.top_k,
            seed=sp.seed,
            defaults=self.defaults,
        )
        # A preempted request comes back with its committed tokens appended to the prompt.
        num_committed = len(new_req_data.prefill_token_ids) - len(new_req_data.prompt_token_ids)
        self.requests[req_index] = RequestDecodeState.create(
            params, self.mask_token_id, num_committed, self.device
        )
        self._slot_of[new_req_data.req_id] = req_index

    def remove_request(self, req_id: str) -> None:
        slot = self._slot_of.pop(req_id, None)
        if slot is not None:
            self.requests.pop(slot, None)

    def prepare_inputs(self, input_batch, req_states) -> dict[str, Any]:
        """Point `logits_indices` at each denoising request's current block."""
        self.denoising_rows = []
        num_drafts = input_batch.num_draft_tokens_per_req
        if num_drafts is None:
            return {}
        indices: list[np.ndarray] = []
        query_end = input_batch.query_start_loc_np[1 : input_batch.num_reqs + 1]
        for row in range(input_batch.num_reqs):
            state = self.requests.get(int(input_batch.idx_mapping_np[row]))
            if state is None or num_drafts[row] == 0:
                continue
            if num_drafts[row] != state.canvas_length:
                # Scheduled without its whole canvas (token budget): this pass is wasted and the
                # request is recomputed next step.
                continue
            block_start = int(query_end[row]) - state.canvas_length - self.logits_shift
            indices.append(np.arange(block_start, block_start + state.block_length))
            self.denoising_rows.append(row)
        flat = np.concatenate(indices) if indices else np.zeros(1, dtype=np.int64)
        input_batch.logits_indices = torch.from_numpy(flat.astype(np.int64)).to(self.device)
        return {}

    def prepare_attn(
        self,
        input_batch,
        cudagraph_mode,
        block_tables,
        slot_mappings,
        attn_groups,
        kv_cache_config,
        for_capture=False,
    ) -> dict[str, Any]:
        if cudagraph_mode == CUDAGraphMode.FULL:
            num_reqs = input_batch.num_reqs_after_padding
            num_tokens = input_batch.num_tokens_after_padding
        else:
            num_reqs = input_batch.num_reqs
            num_tokens = input_batch.num_tokens
        seq_lens_cpu = input_batch.seq_lens_cpu_upper_bound
        return build_attn_metadata(
            attn_groups=attn_groups,
            num_reqs=num_reqs,
            num_tokens=num_tokens,
            query_start_loc_gpu=input_batch.query_start_loc[: num_reqs + 1],
            query_start_loc_cpu=torch.from_numpy(input_batch.query_start_loc_np[: num_reqs + 1]),
            max_query_len=int(input_batch.num_scheduled_tokens.max()),
            seq_lens=input_batch.seq_lens,
            max_seq_len=self.max_model_len if for_capture else int(seq_lens_cpu[:num_reqs].max()),
            block_tables=block_tables,
            slot_mappings=slot_mappings,
            kv_cache_config=kv_cache_config,
            seq_lens_cpu_upper_bound=seq_lens_cpu,
            positions=input_batch.positions,
            is_prefilling=torch.from_numpy(input_batch.is_prefilling_np),
            for_cudagraph_capture=for_capture,
            causal=False,
        )
