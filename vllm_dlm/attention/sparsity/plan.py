"""One step's sparsity work, by batch row, as the dLLM runner hooks plan it and the `sparsed`
layers carry it out (`attention.impl`).

  SparseD        rows reusing their masks walk kept key blocks; rows at their switch step compute
                 the masks (that step stays dense)
  Sparse-dLLM    rows in their block's selection step choose kept tokens; their later (dual)
                 steps walk only those tokens (kept whole pages: compacted onto the request's
                 live pages, then on FA3 with per-layer block tables of the kept pages, or on our
                 kernel with per-layer block tables pointing at where each kept page now is)
  both           a row with masks and kept tokens walks its kept tokens, filtered per head by its
                 SparseD keep bits

Rows in none of these attend densely. Per-layer packing for the kernel happens here, once per
layer (the per-request offsets are built once per step and shared by the layers).
"""

import functools
from dataclasses import dataclass, field

import torch

from vllm_dlm.attention.ops import fa3_sparse
from vllm_dlm.attention.ops.paged_attention import BlockLists, TokenLists
from vllm_dlm.attention.sparsity.eviction import (
    RequestKeptTokens,
    kept_page_tables,
    pack_token_lists,
    remapped_block_tables,
)
from vllm_dlm.attention.sparsity.sparsed import RequestMasks, expand_lists, lists_to_mask, pack_block_lists


# Most memory (page indices + block tables) that the FA3 virtual sequences of all layers may take
# when built once per step; a 32-token dual-cache step of a 1k-token request with SparseD's
# defaults needs ~0.5 MiB, a 64k full pass ~8 GiB (built layer by layer instead).
VIRTUAL_SEQUENCES_BYTES = 256 * 2**20


@dataclass
class MaskComputation:
    """A row whose SparseD masks this full pass computes, layer by layer."""

    masks: RequestMasks  # filled by the layers: one entry each
    query_start: int  # the row's tokens in this step's batch (its whole sequence)
    query_end: int
    select: float
    prompt_blocks: int | None  # isolated selection: key blocks [0, n) are the prompt's


@dataclass
class TokenSelection:
    """A row whose kept tokens this step selects (Sparse-dLLM), layer by layer: in a full pass
    from this step's queries and keys; in a dual-cache step (`evict_pass="cached"`) from the
    block's queries against the keys in the paged cache."""

    kept: RequestKeptTokens  # filled by the layers: one entry each
    query_start: int  # the row's tokens in this step's batch (full pass: its whole sequence)
    query_end: int
    block_length: int
    keep_ratio: float
    kernel_size: int
    by_page: bool = False  # keep whole KV-cache pages
    cached_row: int | None = None  # batch row whose keys come from the paged cache (cached step)
    live: torch.Tensor | None = None  # by_page: the request's live logical pages (set by the first layer)


@dataclass
class StepSparsity:
    masks: dict[int, RequestMasks] = field(default_factory=dict)
    compute_masks: dict[int, MaskComputation] = field(default_factory=dict)
    kept: dict[int, RequestKeptTokens] = field(default_factory=dict)
    select_tokens: dict[int, TokenSelection] = field(default_factory=dict)
    query_pos: dict[int, tuple[int, int]] = field(default_factory=dict)  # row -> (first pos, count)
    # every batch row, host side: (first token, query length, first position, keys attended)
    rows: list[tuple[int, int, int, int]] = field(default_factory=list)
    on_fa3: bool | None = None  # SparseD lists on FA3 virtual sequences (set by the first layer)
    _page_tables: dict | None = None
    _remapped: dict | None = None
    _virtual: tuple[bool, "fa3_sparse.VirtualSequences | None"] | None = None  # (all layers, sequences)
    _layer_index: dict[str, int] = field(default_factory=dict)
    _block_meta: torch.Tensor | None = None
    _token_meta: torch.Tensor | None = None
    _bits_meta: torch.Tensor | None = None

    def __bool__(self) -> bool:
        return bool(self.masks or self.compute_masks or self.kept or self.select_tokens)

    def _mask_block_size(self, rows) -> int:
        return min(self.masks[r].block_size for r in rows)

    def _lists(self, row: int, layer_name: str, block_size: int):
        masks = self.masks[row]
        blocks, counts = masks.layers[layer_name]
        factor = masks.block_size // block_size
        return expand_lists(blocks, counts, factor) if factor > 1 else (blocks, counts)

    def virtual_sequences(self, layer_name: str, block_table, page_size: int, num_kv_heads: int,
                          num_heads: int) -> tuple[fa3_sparse.VirtualSequences, int]:
        """(the step's FA3 virtual sequences, this layer's index in them). Built at the first layer
        for all layers when they fit in `VIRTUAL_SEQUENCES_BYTES` (each row's geometry is kept in
        its masks and reused while its positions and keys stay the same, as over a block's
        dual-cache steps); otherwise (long full passes) built for each layer alone."""
        if self._virtual is None:
            geometry = self._geometry(page_size, num_heads, block_table.device, per_layer=None)
            self._virtual = (False, None)
            if geometry is not None:
                self._virtual = (True, fa3_sparse.build_virtual_sequences(
                    self._row_infos(None), geometry, block_table, num_kv_heads, num_heads))
        all_layers, seqs = self._virtual
        if all_layers:
            return seqs, self._layer_index[layer_name]
        rows = self._row_infos(layer_name)
        geometry = self._geometry(page_size, num_heads, block_table.device, per_layer=layer_name)
        return fa3_sparse.build_virtual_sequences(rows, geometry, block_table, num_kv_heads, num_heads), 0

    def _row_infos(self, layer_name: str | None) -> list[fa3_sparse.RowInfo]:
        """Every row with its masks (None: dense): of one layer, or stacked over all (None)."""
        infos = []
        for row, (q_start, q_len, pos0, seq_len) in enumerate(self.rows):
            masks = self.masks.get(row)
            lists = None
            if masks is not None:
                lists = masks.layers[layer_name] if layer_name is not None else masks.stacked()[1:]
            infos.append(fa3_sparse.RowInfo(q_start, q_len, pos0, seq_len, lists,
                                            masks.block_size if masks else 128))
        return infos

    def _geometry(self, page_size: int, num_heads: int, device, per_layer: str | None):
        """Each row's virtual-sequence geometry (None for rows without queries): of one layer, or
        for all layers (per_layer None; None if it would not fit in VIRTUAL_SEQUENCES_BYTES)."""
        if per_layer is not None:
            return [fa3_sparse.row_geometry(info, page_size, num_heads, device) if info.q_len else None
                    for info in self._row_infos(per_layer)]
        total = 0
        for row, (_, q_len, pos0, _) in enumerate(self.rows):  # size first: stacking allocates
            masks = self.masks.get(row)
            if masks is not None and q_len:
                bs = masks.block_size
                blocks = next(iter(masks.layers.values()))[0]
                num_q_blocks = (pos0 + q_len - 1) // bs - pos0 // bs + 1
                # page indices (int64) + the table (int32)
                total += len(masks.layers) * blocks[:, :1].numel() * num_q_blocks * (bs // page_size) * 12
        if total > VIRTUAL_SEQUENCES_BYTES:
            return None
        names, geometry = None, []
        for row, info in enumerate(self._row_infos(None)):
            masks = self.masks.get(row)
            if not info.q_len:
                geometry.append(None)
                continue
            if masks is None:
                geometry.append(fa3_sparse.row_geometry(info, page_size, num_heads, device))
                continue
            row_names = masks.stacked()[0]
            names = names or row_names
            assert row_names == names, "rows' SparseD masks cover different layers"
            key = (info.pos0, info.q_len, info.seq_len, page_size)
            if masks.geometry is None or masks.geometry[0] != key:
                masks.geometry = (key, fa3_sparse.row_geometry(info, page_size, num_heads, device))
            geometry.append(masks.geometry[1])
        self._layer_index = {name: i for i, name in enumerate(names or [])}
        return geometry

    def block_lists(self, layer_name: str, num_reqs: int, device) -> BlockLists | None:
        """Masks of the rows that walk key blocks (those without kept tokens), for one layer, over
        blocks of the smallest block size among them (a larger block is split)."""
        rows = [r for r in self.masks if r not in self.kept]
        if not rows:
            return None
        block_size = self._mask_block_size(rows)
        per_row = [None] * num_reqs
        for r in rows:
            per_row[r] = self._lists(r, layer_name, block_size)
        lists = pack_block_lists(per_row, block_size, device, meta=self._block_meta)
        self._block_meta = lists.meta
        return lists

    @functools.cached_property
    def kept_on_pages(self) -> bool:
        """Every row with kept tokens keeps whole pages, and no row has SparseD work: the step can
        run on FlashAttention-3 with per-layer block tables of the kept pages (decided once per
        step, after planning)."""
        return (bool(self.kept) and not self.masks and not self.compute_masks
                and all(kept.pages for kept in self.kept.values()))

    def page_table(self, layer_name: str, block_table, seq_lens, page_size: int, max_seq_len: int):
        """(block table, keys attended) of one layer for FA3 (all layers built at the first call)."""
        if self._page_tables is None:
            self._page_tables = kept_page_tables(self.kept, block_table, seq_lens, page_size, max_seq_len)
        return self._page_tables[layer_name]

    def kept_block_table(self, layer_name: str, block_table, page_size: int):
        """This layer's block table for kernels that read kept tokens by position: rows whose kept
        pages were compacted point at the pages now holding them (all layers built at the first
        call); without such rows, the batch's table."""
        if self._remapped is None:
            self._remapped = remapped_block_tables(self.kept, block_table, page_size)
        return self._remapped.get(layer_name, block_table)

    def token_lists(self, layer_name: str, num_reqs: int, device) -> TokenLists | None:
        """Kept tokens of one layer; rows that also have SparseD masks carry the keep bits of the
        query blocks their queries touch."""
        if not self.kept:
            return None
        per_row = [None] * num_reqs
        for r, kept in self.kept.items():
            per_row[r] = kept.layers[layer_name]
        lists = pack_token_lists(per_row, device, meta=self._token_meta)
        self._token_meta = lists.meta
        both = [r for r in self.kept if r in self.masks]
        if both:
            block_size = self._mask_block_size(both)
            meta, bits, offset = [(-1, 0, 0, 0)] * num_reqs, [], 0
            for r in both:
                blocks, counts = self._lists(r, layer_name, block_size)
                first, count = self.query_pos[r]
                qb0, qb1 = first // block_size, (first + count - 1) // block_size
                nkb = int(blocks.shape[1])  # masks cover the whole sequence: nK == nQ
                rows_bits = lists_to_mask(blocks[:, qb0 : qb1 + 1], counts[:, qb0 : qb1 + 1], nkb)
                bits.append(rows_bits.to(torch.uint8).reshape(-1))
                meta[r] = (offset, qb0, qb1 - qb0 + 1, nkb)
                offset += rows_bits.numel()
            if self._bits_meta is None:
                self._bits_meta = torch.tensor(meta, dtype=torch.int64).to(device, non_blocking=True)
            lists.bits = bits[0] if len(bits) == 1 else torch.cat(bits)
            lists.bits_meta, lists.bits_block_size = self._bits_meta, block_size
        return lists
