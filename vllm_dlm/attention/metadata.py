"""Per-step attention metadata for `sparsed`: built once per step from vLLM's common metadata, then
given this step's sparsity plan by the dLLM runner hooks (`runner.model_state.prepare_attn`)."""

from dataclasses import dataclass, field

import torch

from vllm.v1.attention.backend import AttentionMetadataBuilder, CommonAttentionMetadata

from vllm_dlm.attention.ops.paged_attention import BlockLists
from vllm_dlm.attention.sparsity.sparsed import RequestMasks, expand_lists, pack_block_lists


@dataclass
class MaskComputation:
    """A batch row whose SparseD masks this (dense, full-pass) step computes, layer by layer."""

    masks: RequestMasks  # filled here: one entry per layer
    query_start: int  # the row's tokens in this step's batch (its whole sequence)
    query_end: int
    select: float
    prompt_blocks: int | None  # isolated selection: key blocks [0, n) are the prompt's


@dataclass
class SparseDStep:
    """This step's SparseD work, by batch row: rows attending with their masks, rows computing
    them. Rows in neither attend densely."""

    reuse: dict[int, RequestMasks] = field(default_factory=dict)
    compute: dict[int, MaskComputation] = field(default_factory=dict)
    _meta: torch.Tensor | None = None

    def block_lists(self, layer_name: str, num_reqs: int, device) -> BlockLists | None:
        """The reused masks of one layer, packed for the kernel (blocks of the smallest block
        size among them; a larger block is split into several)."""
        if not self.reuse:
            return None
        block_size = min(m.block_size for m in self.reuse.values())
        rows = [None] * num_reqs
        for row, masks in self.reuse.items():
            blocks, counts = masks.layers[layer_name]
            factor = masks.block_size // block_size
            rows[row] = expand_lists(blocks, counts, factor) if factor > 1 else (blocks, counts)
        lists = pack_block_lists(rows, block_size, device, meta=self._meta)
        self._meta = lists.meta  # the same for every layer
        return lists


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
    sparse: SparseDStep | None = None

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
