"""Per-step attention metadata for `sparsed`: built once per step from vLLM's common metadata, then
given this step's sparsity plan by the dLLM runner hooks (`runner.model_state.prepare_attn`)."""

from dataclasses import dataclass

import torch

from vllm.v1.attention.backend import AttentionMetadataBuilder, CommonAttentionMetadata

from vllm_dlm.attention.sparsity.plan import StepSparsity


@dataclass
class SparsedMetadata:
    num_actual_tokens: int
    max_query_len: int
    max_seq_len: int
    query_start_loc: torch.Tensor  # [num_reqs + 1] int32
    seq_lens: torch.Tensor  # [num_reqs] keys each request attends to (dual cache: incl. suffix)
    block_table: torch.Tensor  # [num_reqs, max_pages] int32
    slot_mapping: torch.Tensor  # [num_tokens] flat KV slot per query token (< 0: padding)
    causal: bool
    # Set by the dLLM runner hooks after the build (None: queries are each request's last
    # positions, and every row is dense).
    query_pos: torch.Tensor | None = None  # [num_reqs] int32 position of each first query
    sparse: StepSparsity | None = None

    @property
    def num_reqs(self) -> int:
        return self.block_table.shape[0]


class SparsedMetadataBuilder(AttentionMetadataBuilder[SparsedMetadata]):
    def __init__(self, kv_cache_spec, layer_names, vllm_config, device) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)

    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata,
              fast_build: bool = False) -> SparsedMetadata:
        m = common_attn_metadata
        if isinstance(m.causal, torch.Tensor):
            raise NotImplementedError("sparsed: per-request causal masks are not supported")
        return SparsedMetadata(
            num_actual_tokens=m.num_actual_tokens,
            max_query_len=m.max_query_len,
            max_seq_len=m.max_seq_len,
            query_start_loc=m.query_start_loc[: m.num_reqs + 1],
            seq_lens=m.seq_lens[: m.num_reqs],
            block_table=m.block_table_tensor[: m.num_reqs],
            slot_mapping=m.slot_mapping,
            causal=bool(m.causal),
        )
