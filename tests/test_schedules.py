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
