"""The batched denoising step (`decoding.batched_step`) against each request's own step
(`RequestDecodeState.step`, itself checked against the reference generate code by the parity tests),
on fresh random logits: same blocks after every step, same commits, same canvas store rows."""

import pytest
import torch

from vllm_dlm.config import resolve_decoding_params
from vllm_dlm.decoding.batched_step import BatchedRows, denoise_batched, is_batchable
from vllm_dlm.decoding.state import RequestDecodeState

MASK, VOCAB = 5, 29

LLADA_REQUESTS = [  # (max_tokens, extra_args)
    (24, {"steps": 24, "block_length": 8}),
    (24, {"steps": 6, "block_length": 8}),  # several positions per step
    (15, {"steps": 21, "block_length": 5}),  # more steps than positions: trailing empty steps
    (32, {"steps": 32, "block_length": 16, "threshold": 0.3}),
    (16, {"steps": 16, "block_length": 8, "threshold": 0.9}),
    (7, {"steps": 7, "block_length": 7}),
]
DREAM_REQUESTS = [
    (12, {"steps": 12, "remasking": "maskgit_plus"}),
    (9, {"steps": 4, "remasking": "topk_margin"}),
    (16, {"steps": 5, "remasking": "entropy"}),
    (10, {"steps": 10, "remasking": "maskgit_plus", "threshold": 0.2}),
]


def _logits(n: int, generator: torch.Generator, ties: bool) -> torch.Tensor:
    logits = torch.randn(n, VOCAB, generator=generator) * 3
    if ties and n > 2:  # equal rows give equal confidences: topk's tie order must not change
        logits[1::3] = logits[0]
    return logits


@pytest.mark.parametrize("family, requests", [("llada", LLADA_REQUESTS), ("dream", DREAM_REQUESTS)])
@pytest.mark.parametrize("ties, gaps", [(False, False), (True, False), (False, True)])
def test_batched_step_equals_each_requests_own_step(family, requests, ties, gaps):
    """gaps: other rows (requests on the per-request path) between the batched blocks."""
    seed = torch.seed() % 2**31
    generator = torch.Generator().manual_seed(seed)
    store = torch.zeros(len(requests) + 3, 40, dtype=torch.long)
    slots = [2, 0, 5, 1, 4, 3, 6][: len(requests)]
    alone, together = [], []
    for (max_tokens, extra), slot in zip(requests, slots):
        params = resolve_decoding_params(family, max_tokens=max_tokens, extra_args=extra)
        assert is_batchable(params)
        alone.append(RequestDecodeState.create(params, MASK, 0, torch.device("cpu")))
        together.append(RequestDecodeState.create(params, MASK, 0, torch.device("cpu"), region=store[slot]))

    steps = 0
    while not all(s.finished for s in alone):
        live = [i for i, s in enumerate(alone) if not s.finished]
        lengths = [alone[i].block_length for i in live]
        gap = 3 if gaps else 0
        logits = _logits(sum(lengths) + gap * len(live), generator, ties)
        if steps % 4 == 1:  # now and then the model proposes the mask token itself
            logits[gap, MASK] = 100.0
        offsets = [sum(lengths[:j]) + gap * (j + 1) for j in range(len(live))]
        expected = []
        for i, offset in zip(live, offsets):
            expected.append(alone[i].step(logits[offset : offset + alone[i].block_length]) is not None)
        rows = BatchedRows([together[i] for i in live], [slots[i] for i in live], offsets)
        committed, groups = denoise_batched(rows, logits, store)
        assert committed == expected, (seed, steps)
        for i in live:
            a, b = alone[i], together[i]
            assert (a.num_committed, a.step_in_block, a.steps_done) == (b.num_committed, b.step_in_block, b.steps_done)
            assert torch.equal(a.region, b.region), (seed, steps, i)
            assert torch.equal(store[slots[i], : a.params.gen_length], a.region)
        assert sorted(i for g in groups for i in g.members) == list(range(len(live)))
        for group in groups:  # the blocks as stepped, and their store rows
            assert group.slots.tolist() == [rows.slots[i] for i in group.members]
            for position, block in zip(group.members, group.blocks):
                state = alone[live[position]]
                start = state.num_committed - (state.block_length if committed[position] else 0)
                assert torch.equal(block, state.region[start : start + state.block_length])
        steps += 1
    assert all(s.finished for s in together)


def test_sampled_rules_keep_the_per_request_path():
    for family, extra, temperature in [("llada", {"remasking": "random"}, 0.0), ("llada", {}, 1.0),
                                       ("dream", {"remasking": "origin"}, 0.0),
                                       ("dream", {"alg_temp": 0.5}, 0.0)]:
        params = resolve_decoding_params(family, max_tokens=8, extra_args={"steps": 8, **extra},
                                         temperature=temperature)
        assert not is_batchable(params), (family, extra, temperature)
    params = resolve_decoding_params("dream", max_tokens=8, extra_args={"steps": 8}, top_p=0.9)
    assert not is_batchable(params)
