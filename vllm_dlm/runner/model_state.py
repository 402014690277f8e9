"""Model Runner V2 hooks for LLaDA and Dream.

Data flow of one engine step, per request:
  scheduler  -> a full pass (prompt + committed + canvas, from position 0) or a cached step (canvas,
                or for `dual` just the current block); see `engine.scheduler.DiffusionScheduler`.
                The canvas rides on vLLM's draft-token slots.
  runner     -> input ids: prompt/committed from `all_token_ids`, canvas from `draft_tokens`
  preprocess_state (here) -> classify each row (`StepKind`), from what was scheduled
  prepare_attn     (here) -> bidirectional attention; a `dual` cached step also reads the cached
                             suffix (seq_len extended past the query)
  prepare_inputs   (here) -> logits only at the current block's positions (Dream: shifted by one)
  sampler          (`runner.sampler`) -> one denoising step per request (the greedy ones together,
                    `decoding.batched_step`); a finished block is emitted
"""

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vllm.config.compilation import CUDAGraphMode
from vllm.logger import init_logger
from vllm.v1.worker.gpu.attn_utils import build_attn_metadata
from vllm.v1.worker.gpu.model_states.default import DefaultModelState

from vllm_dlm.attention.metadata import SparsedMetadata
from vllm_dlm.attention.sparsity.eviction import RequestKeptTokens
from vllm_dlm.attention.sparsity.plan import MaskComputation, StepSparsity, TokenSelection
from vllm_dlm.attention.sparsity.sparsed import RequestMasks, num_prompt_blocks
from vllm_dlm.config import resolve_decoding_params
from vllm_dlm.decoding.state import RequestDecodeState
from vllm_dlm.engine.config_hook import server_defaults
from vllm_dlm.models import model_family

logger = init_logger(f"vllm.dlm.{__name__}")


class StepKind(enum.Enum):
    PREFILL = "prefill"  # prompt only (first step of a new or resumed request): no logits
    FULL = "full"  # whole sequence recomputed from position 0
    CACHED = "cached"  # canvas (prefix) or block (dual) against cached KV
    SKIP = "skip"  # scheduled without its whole canvas (token budget): wasted, redone next step


@dataclass
class RowPlan:
    row: int
    state: RequestDecodeState | None
    kind: StepKind
    num_computed: int  # tokens already in the KV cache before this step
    num_drafts: int
    suffix_in_cache: int = 0  # dual cached step: canvas positions after the block, read from cache


class DiffusionLMModelState(DefaultModelState):
    # No "bonus" token after the drafts: a step's only outputs are finished blocks. (With vLLM's
    # default of 1 the runner would write the last committed token in front of the canvas, which
    # for a cached step is the previous request's last query slot.)
    num_new_sampled_tokens_per_step: int = 0

    def __init__(self, vllm_config, model, encoder_cache, device) -> None:
        super().__init__(vllm_config, model, encoder_cache, device)
        hf_config = self.model_config.hf_config
        self.family = model_family(hf_config)
        self.mask_token_id = int(hf_config.mask_token_id)
        # Dream predicts position i from hidden state i-1.
        self.logits_shift = 1 if self.family == "dream" else 0
        self.defaults = server_defaults(vllm_config)
        self.requests: dict[int, RequestDecodeState] = {}  # req_states slot -> state
        # Each slot's generation region (committed blocks, then the canvas): the rows the batched
        # denoising step reads and writes (`decoding.batched_step`).
        self.canvas_store = torch.full((self.max_num_reqs, self.defaults.max_gen_len), self.mask_token_id,
                                       dtype=torch.long, device=device)
        # SparseD masks per request (req_states slot -> RequestMasks), with the `sparsed` backend:
        # computed at the request's switch step, freed with the request (also when preempted: a
        # resumed request recomputes them at its first full pass).
        self.sparsed_masks: dict[int, RequestMasks] = {}
        # Sparse-dLLM kept tokens of each request's current block (slot -> RequestKeptTokens),
        # selected in the block's eviction pass; replaced every block, freed with the request.
        self.kept_tokens: dict[int, RequestKeptTokens] = {}
        self._slot_of: dict[str, int] = {}
        # This step's plan per batch row (set in preprocess_state).
        self.plan: list[RowPlan] = []

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
            params, self.mask_token_id, num_committed, self.device, region=self.canvas_store[req_index]
        )
        self._slot_of[new_req_data.req_id] = req_index

    def remove_request(self, req_id: str) -> None:
        slot = self._slot_of.pop(req_id, None)
        if slot is not None:
            self.requests.pop(slot, None)
            self.sparsed_masks.pop(slot, None)
            self.kept_tokens.pop(slot, None)

    def preprocess_state(self, input_batch, block_tables, kv_cache_config, num_computed_tokens):
        """Classify each row of a real batch from what the scheduler gave it."""
        num_drafts = input_batch.num_draft_tokens_per_req
        self.plan = []
        for row in range(input_batch.num_reqs):
            state = self.requests.get(int(input_batch.idx_mapping_np[row]))
            drafts = 0 if num_drafts is None else int(num_drafts[row])
            computed = int(input_batch.num_computed_tokens_np[row])
            plan = RowPlan(row, state, StepKind.SKIP, computed, drafts)
            if state is None or drafts == 0:
                plan.kind = StepKind.PREFILL
            elif computed == 0:
                if drafts == state.canvas_length:
                    plan.kind = StepKind.FULL
            elif state.params.cache == "prefix" and drafts == state.canvas_length:
                plan.kind = StepKind.CACHED
            elif state.params.cache == "dual" and drafts == state.block_length:
                plan.kind = StepKind.CACHED
                plan.suffix_in_cache = state.canvas_length - state.block_length
            self.plan.append(plan)

    def denoising_plans(self) -> list[RowPlan]:
        return [p for p in self.plan if p.kind in (StepKind.FULL, StepKind.CACHED)]

    def prepare_inputs(self, input_batch, req_states) -> dict[str, Any]:
        """Point `logits_indices` at each denoising request's current block (it starts at the
        first draft slot; Dream reads one position earlier)."""
        query_end = input_batch.query_start_loc_np[1 : input_batch.num_reqs + 1]
        indices = [
            np.arange(start, start + p.state.block_length)
            for p in self.denoising_plans()
            for start in [int(query_end[p.row]) - p.num_drafts - self.logits_shift]
        ]
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
        seq_lens = input_batch.seq_lens
        seq_lens_cpu = input_batch.seq_lens_cpu_upper_bound
        suffix = np.zeros(seq_lens_cpu.shape[0], dtype=np.int32)
        for p in self.plan if not for_capture else []:
            suffix[p.row] = p.suffix_in_cache
        if suffix.any():
            seq_lens_cpu = seq_lens_cpu + torch.from_numpy(suffix)
            seq_lens = seq_lens + torch.from_numpy(suffix[: seq_lens.shape[0]]).to(seq_lens.device)
        attn_metadata = build_attn_metadata(
            attn_groups=attn_groups,
            num_reqs=num_reqs,
            num_tokens=num_tokens,
            query_start_loc_gpu=input_batch.query_start_loc[: num_reqs + 1],
            query_start_loc_cpu=torch.from_numpy(input_batch.query_start_loc_np[: num_reqs + 1]),
            max_query_len=int(input_batch.num_scheduled_tokens.max()),
            seq_lens=seq_lens,
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
        if not for_capture:
            self._plan_sparsed(attn_metadata, input_batch, seq_lens_cpu)
        return attn_metadata

    def _plan_sparsed(self, attn_metadata: dict, input_batch, seq_lens_cpu) -> None:
        """`sparsed` backend: each row's first query position, and this step's sparsity work."""
        layers = [m for m in attn_metadata.values() if isinstance(m, SparsedMetadata)]
        if not layers:
            return
        query_pos = np.zeros(layers[0].num_reqs, dtype=np.int32)
        for p in self.plan:
            query_pos[p.row] = p.num_computed
        sparse = self._plan_sparsity(input_batch)
        if sparse:
            qsl = input_batch.query_start_loc_np
            sparse.rows = [(int(qsl[p.row]), int(qsl[p.row + 1] - qsl[p.row]), p.num_computed,
                            int(seq_lens_cpu[p.row])) for p in self.plan]
        query_pos = torch.from_numpy(query_pos).to(self.device, non_blocking=True)
        for metadata in layers:
            metadata.query_pos = query_pos
            metadata.sparse = sparse or None

    def _plan_sparsity(self, input_batch) -> StepSparsity:
        """SparseD: a request's masks are computed at its first full pass at or after its switch
        step (that step stays dense) and used by every later step, cached ones included.
        Sparse-dLLM: the block's step `evict_delay` steps in (a full pass, or with
        evict_pass="cached" a dual-cache step) selects the kept tokens, which the block's later
        (dual) steps use."""
        step = StepSparsity()
        qsl = input_batch.query_start_loc_np
        for p in self.denoising_plans():
            params, state = p.state.params, p.state
            slot = int(input_batch.idx_mapping_np[p.row])
            qs, qe = int(qsl[p.row]), int(qsl[p.row + 1])
            step.query_pos[p.row] = (p.num_computed, qe - qs)
            masks = self.sparsed_masks.get(slot)
            switch = params.sparsed.switch_step(params.steps)
            if masks is not None:
                step.masks[p.row] = masks
                if not masks.reported:  # computed by the previous step: its size is final
                    masks.reported = True
                    logger.info("vllm-dlm: SparseD masks of request %s: %.1f MiB (%d layers, block %d)",
                                input_batch.req_ids[p.row], masks.nbytes / 2**20, len(masks.layers),
                                masks.block_size)
            elif p.kind == StepKind.FULL and switch is not None and state.steps_done >= switch:
                bs = params.sparsed.block_size
                masks = self.sparsed_masks[slot] = RequestMasks(bs)
                prompt_blocks = None
                if params.sparsed.isolated:
                    prompt_blocks = num_prompt_blocks(qe - qs - params.gen_length, qe - qs, bs)
                step.compute_masks[p.row] = MaskComputation(masks, qs, qe, params.sparsed.select, prompt_blocks)
            evict = params.eviction
            if not evict.enabled:
                continue
            selects = state.step_in_block == evict.evict_delay and (
                p.kind == StepKind.FULL or evict.evict_pass == "cached")
            if selects:
                if p.kind == StepKind.FULL:  # the step's whole sequence is its query and key
                    block_start, seq_len, cached_row = (qe - qs) - state.canvas_length, qe - qs, None
                else:  # dual-cache step: the block against the prefix and suffix in the paged cache
                    block_start, seq_len, cached_row = p.num_computed, p.num_computed + state.canvas_length, p.row
                kept = self.kept_tokens[slot] = RequestKeptTokens(block_start, seq_len)
                step.select_tokens[p.row] = TokenSelection(
                    kept, qs, qe, state.block_length, evict.keep_ratio, evict.kernel_size,
                    by_page=evict.evict_unit == "page", cached_row=cached_row)
            elif p.kind == StepKind.CACHED:
                kept = self.kept_tokens.get(slot)
                if kept is not None and kept.block_start == p.num_computed:
                    step.kept[p.row] = kept
        return step
