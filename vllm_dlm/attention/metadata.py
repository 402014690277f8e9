"""Per-step attention metadata for `sparsed`: built once per step from vLLM's common metadata."""

from dataclasses import dataclass, field

import torch

from vllm.v1.attention.backend import AttentionMetadataBuilder, CommonAttentionMetadata


@dataclass
class SparsedMetadata:
    num_actual_tokens: int
    max_query_len: int
    query_start_loc: torch.Tensor  # [num_reqs + 1] int32
    seq_lens: torch.Tensor  # [num_reqs] keys each request attends to (dual cache: incl. suffix)
    block_table: torch.Tensor  # [num_reqs, max_pages] int32
    slot_mapping: torch.Tensor  # [num_tokens] flat KV slot per query token (< 0: padding)
    causal: bool
    # SparseD work of this step (set by `runner.model_state` after the build); None: all dense.
    sparse: "SparseDStep | None" = None


@dataclass
class SparseDRow:
    """One request's SparseD state in this step. `masks` maps layer name -> keep mask
    [Hq, nB, nB] (bool, blocks of `block_size`), owned by the request and freed with it."""

    query_start: int
    query_end: int
    masks: dict
    block_size: int
    select: float
    num_prompt_blocks: int | None  # isolated selection: key blocks [0, n) are the prompt's


@dataclass
class SparseDStep:
    compute: dict[int, SparseDRow] = field(default_factory=dict)  # row -> compute masks (dense step)
    reuse: dict[int, SparseDRow] = field(default_factory=dict)  # row -> attend with its masks


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
            query_start_loc=m.query_start_loc[: m.num_reqs + 1],
            seq_lens=m.seq_lens[: m.num_reqs],
            block_table=m.block_table_tensor[: m.num_reqs],
            slot_mapping=m.slot_mapping,
            causal=bool(m.causal),
        )
