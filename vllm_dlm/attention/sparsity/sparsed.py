"""SparseD head-specific block masks: selected once from block importance, kept as block lists.

At the switch step (the last full-attention step) each layer scores, per head, every
(query block, key block) tile by the mean of softmax(QK^T / sqrt(head_dim)) over the tile
(`ops.block_scores`), and each query block keeps `k(n) = max(1, int(n * select) + 1)` key blocks
(capped at n), as SparseD's code does:
  isolated (default)  prompt blocks: those among the top k(nK) of all nK key blocks that are prompt
                      blocks; generated blocks: the top k(nG) of the nG generated key blocks, scored
                      under a softmax over the generated keys only. The union is kept, so generated
                      tokens always keep their own budget. Prompt blocks are the first
                      min(ceil(prompt_len / block_size), nK - 1) (a block holding the prompt's end
                      counts as prompt).
  not isolated        the top k(nK) of all key blocks.
(SparseD's code scales LLaDA's scores by 1/sqrt(n_heads); we use 1/sqrt(head_dim), the
attention's own scale.)

A mask is stored as the ascending list of kept key-block ids per (head, query block) — what the
attention kernel walks — plus a count per list; list lengths are known without reading the GPU.
"""

from dataclasses import dataclass, field

import torch

from vllm_dlm.attention.ops.paged_attention import BlockLists


def num_kept(num_blocks: int, select: float) -> int:
    return min(num_blocks, max(1, int(num_blocks * select) + 1))


def num_prompt_blocks(prompt_len: int, seq_len: int, block_size: int) -> int:
    """Key blocks [0, n) that isolated selection ranks as the prompt's (at least one block is
    the generation's)."""
    return min(-(-prompt_len // block_size), -(-seq_len // block_size) - 1)


def select_key_blocks(
    scores: torch.Tensor, select: float, prompt_blocks: int | None = None,
    generated_scores: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [H, nQ, nK] block importance (softmax over all keys) -> (blocks [H, nQ, kmax] int32,
    kept key-block ids ascending; counts [H, nQ] int32).

    prompt_blocks: isolated selection with key blocks [0, prompt_blocks) as the prompt's;
    generated_scores [H, nQ, nK - prompt_blocks] then scores the generated blocks under a softmax
    over the generated keys. None: one top-k over all key blocks.
    """
    nk = scores.shape[-1]
    top = scores.topk(num_kept(nk, select), dim=-1).indices
    if prompt_blocks is None:
        blocks = top.sort(dim=-1).values.to(torch.int32).contiguous()
        return blocks, torch.full(blocks.shape[:2], blocks.shape[-1], dtype=torch.int32, device=blocks.device)
    if generated_scores is None or generated_scores.shape[-1] != nk - prompt_blocks:
        raise ValueError("isolated selection needs generated_scores over the generated key blocks")
    in_prompt = top < prompt_blocks
    prompt_part = torch.where(in_prompt, top, nk)  # nk: not kept, sorts last
    generated = generated_scores.topk(num_kept(nk - prompt_blocks, select), dim=-1).indices + prompt_blocks
    blocks = torch.cat([prompt_part, generated], dim=-1).sort(dim=-1).values.to(torch.int32).contiguous()
    counts = (in_prompt.sum(-1) + generated.shape[-1]).to(torch.int32)
    return blocks, counts


def lists_to_mask(blocks: torch.Tensor, counts: torch.Tensor, num_key_blocks: int) -> torch.Tensor:
    """(blocks [H, nQ, k], counts [H, nQ]) -> keep mask [H, nQ, num_key_blocks] bool."""
    valid = torch.arange(blocks.shape[-1], device=blocks.device) < counts[..., None]
    index = torch.where(valid, blocks.long(), num_key_blocks)
    mask = torch.zeros(*blocks.shape[:2], num_key_blocks + 1, dtype=torch.bool, device=blocks.device)
    return mask.scatter_(-1, index, True)[..., :num_key_blocks]


def mask_to_lists(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """keep mask [H, nQ, nK] -> (blocks [H, nQ, kmax] ascending, counts [H, nQ]), int32."""
    counts = mask.sum(-1, dtype=torch.int32)
    kmax = max(int(counts.max()), 1)
    order = torch.sort(mask.to(torch.uint8), dim=-1, descending=True, stable=True).indices
    return order[..., :kmax].to(torch.int32).contiguous(), counts


@dataclass
class RequestMasks:
    """One request's SparseD masks: layer name -> (blocks [Hq, nQ, k], counts [Hq, nQ]).
    Created at the request's switch step, layer by layer; freed with the request."""

    block_size: int
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    reported: bool = False  # its size has been logged
    # FA3 path: the masks of all layers stacked, and the virtual-sequence geometry of the last
    # step's positions (`sparsity.plan.StepSparsity.virtual_sequences`)
    _stacked: tuple[list[str], torch.Tensor, torch.Tensor] | None = None
    geometry: tuple[tuple, object] | None = None

    def stacked(self) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """(layer names, blocks [L, Hq, nQ, kmax], counts [L, Hq, nQ]) of the complete masks,
        built once; the per-layer entries become views of it (lists shorter than the longest are
        padded; their counts say so)."""
        if self._stacked is None:
            names = list(self.layers)
            kmax = max(self.layers[n][0].shape[-1] for n in names)
            blocks = torch.stack([torch.nn.functional.pad(self.layers[n][0], (0, kmax - self.layers[n][0].shape[-1]))
                                  for n in names])
            counts = torch.stack([self.layers[n][1] for n in names])
            self._stacked = (names, blocks, counts)
            self.layers = {n: (blocks[i], counts[i]) for i, n in enumerate(names)}  # views: no copy
        return self._stacked

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() + c.numel() * c.element_size()
                   for b, c in self.layers.values())


def expand_lists(blocks: torch.Tensor, counts: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists over blocks of size B -> the same mask over blocks of size B / factor: each query
    block becomes `factor` rows and each kept key block `factor` consecutive ids."""
    sub = torch.arange(factor, dtype=blocks.dtype, device=blocks.device)
    fine = (blocks[..., :, None] * factor + sub).flatten(-2)
    return fine.repeat_interleave(factor, dim=1).contiguous(), (counts * factor).repeat_interleave(factor, dim=1)


def pack_block_lists(rows: list[tuple[torch.Tensor, torch.Tensor] | None], block_size: int,
                     device, meta: torch.Tensor | None = None) -> BlockLists:
    """One layer's lists of every request in a batch (None: dense row; at least one is not)
    -> `BlockLists`. `meta` may be passed when already built for another layer of the batch."""
    offsets, blocks, counts = [], [], []
    b_off = c_off = 0
    for row in rows:
        if row is None:
            offsets.append((-1, -1, 0, 0))
            continue
        b, c = row
        offsets.append((b_off, c_off, b.shape[1], b.shape[2]))
        blocks.append(b.reshape(-1))
        counts.append(c.reshape(-1))
        b_off += b.numel()
        c_off += c.numel()
    if meta is None:
        meta = torch.tensor(offsets, dtype=torch.int64).to(device, non_blocking=True)
    return BlockLists(
        blocks=blocks[0] if len(blocks) == 1 else torch.cat(blocks),
        counts=counts[0] if len(counts) == 1 else torch.cat(counts),
        meta=meta,
        block_size=block_size,
    )
