"""Transfer schedules against the reference implementations' own formulas."""

import pytest
import torch

from tests.reference.llada import get_num_transfer_tokens
from vllm_dlm.decoding.schedules import dream_num_transfer_tokens, llada_num_transfer_tokens


@pytest.mark.parametrize("num_masked, steps", [(32, 32), (32, 7), (5, 8), (17, 4), (1, 1)])
def test_llada_schedule_matches_reference(num_masked, steps):
    mask = torch.ones(1, num_masked, dtype=torch.bool)
    assert llada_num_transfer_tokens(num_masked, steps) == get_num_transfer_tokens(mask, steps)[0].tolist()


@pytest.mark.parametrize("steps", [1, 3, 8, 64])
def test_dream_schedule_unmasks_everything_by_the_last_step(steps):
    remaining = 64
    for step in range(steps):
        k = dream_num_transfer_tokens(remaining, step, steps)
        assert 0 <= k <= remaining
        remaining -= k
    assert remaining == 0


@pytest.mark.parametrize("gen, block, steps", [(32, 16, 6), (16, 8, 20), (24, 8, 3)])
def test_llada_state_finishes_blocks_exactly_when_its_masks_run_out(gen, block, steps):
    """The LLaDA state decides on the host when a block ends (no device sync): that must be exactly
    when the canvas has no mask left, also with more steps than positions (trailing empty steps)."""
    from vllm_dlm.config import resolve_decoding_params
    from vllm_dlm.decoding.state import RequestDecodeState

    mask_id, vocab = 7, 11
    params = resolve_decoding_params("llada", max_tokens=gen,
                                     extra_args={"steps": steps, "block_length": block})
    state = RequestDecodeState.create(params, mask_id, 0, torch.device("cpu"))
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    committed = []
    while not state.finished:
        logits = torch.randn(block, vocab, generator=g)
        logits[:, mask_id] = -1e9
        before = int((state.canvas[:block] == mask_id).sum())
        out = state.step(logits)
        left = int((state.canvas[:block] == mask_id).sum()) if out is None else 0
        assert (out is None) == (left > 0)
        if out is not None:
            assert not (out == mask_id).any() and before > 0
            committed.append(out)
    assert len(committed) == gen // block
