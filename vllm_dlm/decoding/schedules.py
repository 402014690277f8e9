"""How many masked positions each denoising step of a block commits.

LLaDA (`get_num_transfer_tokens`): a block's masks are spread evenly over its steps, the remainder
going to the first steps. Dream (`_sample`): step i of n commits int(m * (1 - s/t)) of the m still
masked positions, with t, s consecutive points of linspace(1, eps, n + 1); the last step commits all.
"""

import torch

DREAM_EPS = 1e-3


def llada_num_transfer_tokens(num_masked: int, steps: int) -> list[int]:
    """[steps] token counts summing to num_masked."""
    base, remainder = divmod(num_masked, steps)
    return [base + 1 if i < remainder else base for i in range(steps)]


def dream_num_transfer_tokens(num_masked: int, step: int, steps: int, eps: float = DREAM_EPS) -> int:
    """Tokens to commit at `step` (0-based) of `steps`, with `num_masked` masks left.

    Computed with the same float32 tensor arithmetic as Dream's generation code, so the integer
    truncation matches it exactly.
    """
    if step == steps - 1:
        return num_masked
    timesteps = torch.linspace(1, eps, steps + 1)
    t, s = timesteps[step], timesteps[step + 1]
    num_mask_token = torch.tensor(num_masked) / 1  # float32, as `mask_index.sum() / batch`
    return int(num_mask_token * (1 - s / t))


def dream_transfer_probability(step: int, steps: int, eps: float = DREAM_EPS) -> float:
    """Dream `origin`: probability that a masked position is revealed at `step`."""
    if step == steps - 1:
        return 1.0
    timesteps = torch.linspace(1, eps, steps + 1)
    return float(1 - timesteps[step + 1] / timesteps[step])
