"""One denoising step for many requests at once, for the greedy rules.

`RequestDecodeState.step` runs a dozen small kernels per request; at batch 64 their launches cost
more than the step's logits (12.5 ms of a 67 ms step on the H200, `step_breakdown_h200.json`). Here
the same arithmetic runs on all blocks together:

  proposals   x0 and confidence of every logits row, per remasking rule (row-wise, so each row
              equals the per-request result bit for bit)
  blocks      each request's current block, gathered from the canvas store in one index
  commit      per group of requests with the same block length and commit count: `topk` of the
              confidence over the masked positions (ties resolved as `topk` on one request's
              block does); threshold decoding: every masked position at or above its threshold
              plus the most confident one. The masks left are known on the host for LLaDA's
              schedule, else counted on the device (one sync per group, not per request)
  write back  the store, in one index

Greedy rules only (temperature 0, no top-p/top-k filter, Dream's `alg_temp` 0); sampled rules keep
the per-request path, which draws from each request's own generator. The canvas store is one
[max_num_reqs, max_gen_len] tensor; a request's `RequestDecodeState.region` is its row.
"""

from dataclasses import dataclass

import numpy as np
import torch

from vllm_dlm.config import DecodingParams
from vllm_dlm.decoding.remasking import dream_propose, llada_propose
from vllm_dlm.decoding.state import RequestDecodeState

PROPOSAL_ROWS = 256  # logits rows per softmax (bounds the float32 probabilities to ~130 MB at 126k vocab)


def is_batchable(params: DecodingParams) -> bool:
    """Whether a request's steps can run in the batched step (greedy, no filters)."""
    if params.temperature != 0:
        return False
    if params.family == "llada":
        return params.remasking == "low_confidence"
    return (params.remasking in ("maskgit_plus", "topk_margin", "entropy") and params.alg_temp == 0
            and not 0 < params.top_p < 1 and params.top_k <= 0)


def greedy_proposals(logits: torch.Tensor, family: str, remasking: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x0 [n] and confidence [n] of logits [n, vocab]: `decoding.remasking`'s rules at temperature 0,
    in row chunks."""
    propose = llada_propose if family == "llada" else dream_propose
    chunks = [propose(logits[i : i + PROPOSAL_ROWS], remasking, 0.0)
              for i in range(0, logits.shape[0], PROPOSAL_ROWS)]
    if len(chunks) == 1:
        return chunks[0]
    return torch.cat([x for x, _ in chunks]), torch.cat([c for _, c in chunks])


@dataclass
class BatchedRows:
    """Requests of one batched step, in logits order: request i's block is logits rows
    [offsets[i], offsets[i] + its block length)."""

    states: list[RequestDecodeState]
    slots: list[int]  # each request's row in the canvas store
    offsets: list[int]


@dataclass
class SteppedGroup:
    """Requests of one step with the same block length and commit count."""

    members: list[int]  # positions in BatchedRows
    blocks: torch.Tensor  # [len(members), block_length] the blocks after the step
    slots: torch.Tensor  # [len(members)] their canvas store rows, on the device


def denoise_batched(rows: BatchedRows, logits: torch.Tensor, store: torch.Tensor) -> tuple[list[bool], list[SteppedGroup]]:
    """One step of every request in `rows`; the stepped blocks are written to `store`.

    Returns, per request, whether its block was committed (its canvas moved on), and the groups
    as stepped.
    """
    states = rows.states
    device = logits.device
    x0_all, conf_all = _proposals(rows, logits)
    counts = [state.begin_step() for state in states]  # host side first (None: threshold)
    groups: dict[tuple[int, int | None], list[int]] = {}
    for i, (state, k) in enumerate(zip(states, counts)):
        groups.setdefault((state.block_length, k), []).append(i)

    width = store.shape[1]
    masks_left = [0] * len(states)
    stepped: list[SteppedGroup] = []
    synced: list[tuple[list[int], torch.Tensor]] = []
    for (block_length, k), members in groups.items():
        n = len(members) * block_length
        starts = np.asarray([rows.slots[i] * width + states[i].num_committed for i in members])
        in_order = n == logits.shape[0] and [rows.offsets[i] for i in members] == list(range(0, n, block_length))
        # One upload per group: store positions, logits rows (unless in order), store rows.
        packed = _to_device(np.concatenate([
            (starts[:, None] + np.arange(block_length)).reshape(-1),
            np.zeros(0, np.int64) if in_order else _block_rows(rows, members),
            np.asarray([rows.slots[i] for i in members]),
        ]), device)
        flat = packed[:n]
        blocks = store.view(-1)[flat].view(len(members), block_length)
        x0, conf = x0_all, conf_all
        if not in_order:
            index = packed[n : 2 * n]
            x0, conf = x0[index], conf[index]
        mask_id = states[members[0]].mask_token_id
        is_masked = blocks == mask_id
        x0 = torch.where(is_masked, x0.view_as(blocks), blocks)
        conf = torch.where(is_masked, conf.view_as(blocks), -torch.inf)
        if k is None:  # Fast-dLLM threshold: every masked position at or above it, plus the top one
            threshold = _to_device(np.asarray([states[i].params.threshold for i in members], np.float32), device)
            take = is_masked & (conf >= threshold[:, None])
            take.scatter_(1, conf.argmax(dim=-1, keepdim=True), True)
            blocks = torch.where(take, x0, blocks)
        elif k > 0:
            index = torch.topk(conf, k, dim=-1).indices
            blocks.scatter_(1, index, x0.gather(1, index))
        if k is None or states[members[0]].params.family == "dream":
            # Counted on the device: a proposal may be the mask token itself (Dream's next count
            # depends on the masks actually left, as in its reference).
            synced.append((members, (blocks == mask_id).sum(dim=-1)))
        else:  # LLaDA's schedule commits exactly k masked positions
            for i in members:
                masks_left[i] = states[i].num_masked - min(k, states[i].num_masked)
        store.view(-1)[flat] = blocks.view(-1)
        stepped.append(SteppedGroup(members, blocks, packed[n if in_order else 2 * n :]))
    for members, left in synced:  # one device sync per such group
        for i, count in zip(members, left.tolist()):
            masks_left[i] = count
    committed = [state.end_step(left) for state, left in zip(states, masks_left)]
    return committed, stepped


def _proposals(rows: BatchedRows, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x0 and confidence of every logits row (rows of no member: unset), by each member's rule."""
    states = rows.states
    by_rule: dict[str, list[int]] = {}
    for i, state in enumerate(states):
        by_rule.setdefault(state.params.remasking, []).append(i)
    family = states[0].params.family
    if len(by_rule) == 1 and sum(s.block_length for s in states) == logits.shape[0]:
        return greedy_proposals(logits, family, states[0].params.remasking)
    x0 = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    confidence = torch.zeros(logits.shape[0], dtype=torch.float32, device=logits.device)
    for rule, members in by_rule.items():
        index = _to_device(_block_rows(rows, members), logits.device)
        x0[index], confidence[index] = greedy_proposals(logits.index_select(0, index), family, rule)
    return x0, confidence


def _block_rows(rows: BatchedRows, members: list[int]) -> np.ndarray:
    """Logits row indices of the members' blocks, in member order."""
    return np.concatenate([
        np.arange(rows.offsets[i], rows.offsets[i] + rows.states[i].block_length) for i in members
    ])


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(array).to(device, non_blocking=True)
