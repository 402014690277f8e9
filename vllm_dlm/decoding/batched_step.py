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
import torch.nn.functional as F

from vllm_dlm.config import DecodingParams
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
    """x0 [n] and confidence [n] of logits [n, vocab] by `decoding.remasking`'s greedy rules."""
    x0 = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    confidence = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    for start in range(0, logits.shape[0], PROPOSAL_ROWS):
        rows = logits[start : start + PROPOSAL_ROWS]
        out = slice(start, start + rows.shape[0])
        if family == "llada":  # llada_propose: argmax, softmax(logits)[x0]
            x0[out] = rows.argmax(dim=-1)
            confidence[out] = F.softmax(rows.float(), dim=-1).gather(-1, x0[out].unsqueeze(-1)).squeeze(-1)
            continue
        probs = F.softmax(rows.float(), dim=-1)  # dream_propose at temperature 0
        conf, x0[out] = probs.max(dim=-1)
        if remasking == "topk_margin":
            top2 = torch.topk(probs, 2, dim=-1).values
            conf = top2[:, 0] - top2[:, 1]
        elif remasking == "entropy":
            conf = (probs * torch.log(probs + 1e-10)).sum(dim=-1)
        confidence[out] = conf
    return x0, confidence


@dataclass
class BatchedRows:
    """Requests of one batched step, in logits order: request i's block is logits rows
    [offsets[i], offsets[i] + its block length)."""

    states: list[RequestDecodeState]
    slots: list[int]  # each request's row in the canvas store
    offsets: list[int]


def denoise_batched(
    rows: BatchedRows, logits: torch.Tensor, store: torch.Tensor
) -> tuple[list[bool], dict[int, tuple[list[int], torch.Tensor]]]:
    """One step of every request in `rows`; the stepped blocks are written to `store`.

    Returns, per request, whether its block was committed (its canvas moved on), and per block
    length the requests' positions in `rows` with their blocks after the step [n, block_length].
    """
    states = rows.states
    device = logits.device
    x0_all = torch.empty(logits.shape[0], dtype=torch.long, device=device)
    conf_all = torch.empty(logits.shape[0], dtype=torch.float32, device=device)
    by_rule: dict[str, list[int]] = {}
    for i, state in enumerate(states):
        by_rule.setdefault(state.params.remasking, []).append(i)
    for rule, members in by_rule.items():
        index = _block_rows(rows, members)
        if len(members) == len(states) and index.size == logits.shape[0]:
            x0_all, conf_all = greedy_proposals(logits, states[0].params.family, rule)
        else:
            index_t = _to_device(index, device)
            x0, conf = greedy_proposals(logits.index_select(0, index_t), states[members[0]].params.family, rule)
            x0_all[index_t], conf_all[index_t] = x0, conf

    # Host side first: each request's commit count (None: threshold).
    counts = [state.begin_step() for state in states]
    groups: dict[tuple[int, int | None], list[int]] = {}
    for i, (state, k) in enumerate(zip(states, counts)):
        groups.setdefault((state.block_length, k), []).append(i)

    width = store.shape[1]
    masks_left = [0] * len(states)
    blocks_by_length: dict[int, tuple[list[int], list[torch.Tensor]]] = {}
    synced: list[tuple[list[int], torch.Tensor]] = []
    for (block_length, k), members in groups.items():
        cols = np.arange(block_length)
        flat = np.asarray([rows.slots[i] * width + states[i].num_committed for i in members])[:, None] + cols
        logit_rows = _block_rows(rows, members)
        flat_t = _to_device(flat.reshape(-1), device)
        index_t = _to_device(logit_rows, device)
        blocks = store.view(-1)[flat_t].view(len(members), block_length)
        mask_id = states[members[0]].mask_token_id
        is_masked = blocks == mask_id
        x0 = torch.where(is_masked, x0_all[index_t].view_as(blocks), blocks)
        conf = torch.where(is_masked, conf_all[index_t].view_as(blocks), -torch.inf)
        if k is None:  # Fast-dLLM threshold: every masked position at or above it, plus the top one
            threshold = _to_device(np.asarray([states[i].params.threshold for i in members], np.float32), device)
            take = is_masked & (conf >= threshold[:, None])
            take.scatter_(1, conf.argmax(dim=-1, keepdim=True), True)
            blocks = torch.where(take, x0, blocks)
        elif k > 0:
            index = torch.topk(conf, k, dim=-1).indices
            blocks = blocks.scatter(1, index, x0.gather(1, index))
        if k is None or states[members[0]].params.family == "dream":
            # Counted on the device: a proposal may be the mask token itself (Dream's next count
            # depends on the masks actually left, as in its reference).
            synced.append((members, (blocks == mask_id).sum(dim=-1)))
        else:  # LLaDA's schedule commits exactly k masked positions
            for i in members:
                masks_left[i] = states[i].num_masked - min(k, states[i].num_masked)
        store.view(-1)[flat_t] = blocks.view(-1)
        positions, tensors = blocks_by_length.setdefault(block_length, ([], []))
        positions.extend(members)
        tensors.append(blocks)
    for members, left in synced:  # one device sync per such group
        for i, n in zip(members, left.tolist()):
            masks_left[i] = n
    committed = [state.end_step(left) for state, left in zip(states, masks_left)]
    return committed, {b: (pos, torch.cat(ts)) for b, (pos, ts) in blocks_by_length.items()}


def _block_rows(rows: BatchedRows, members: list[int]) -> np.ndarray:
    """Logits row indices of the members' blocks, in member order."""
    return np.concatenate([
        np.arange(rows.offsets[i], rows.offsets[i] + rows.states[i].block_length) for i in members
    ])


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(array).to(device, non_blocking=True)
