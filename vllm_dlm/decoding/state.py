"""One request's denoising state machine.

The generation region of `gen_length` positions starts fully masked. It is split into blocks of
`block_length`, denoised left to right, `steps_per_block` steps each. The *canvas* is what is not yet
committed: the current block followed by the masked future blocks. Each step the model sees
prompt + committed + canvas; `step()` takes the logits of the current block's positions and
unmasks some of them. When the block has no mask left it is committed (emitted to vLLM as sampled
tokens, which become part of the request's sequence) and the canvas moves on to the next block.

With `threshold` (Fast-dLLM parallel decoding) a step commits every masked position whose confidence
reaches the threshold (always at least the most confident one), so a block can finish in fewer
steps; without it, the model family's schedule decides how many positions each step commits. A
block also finishes early once no mask is left (the remaining reference steps would commit nothing).

Because a committed block never changes again, a request preempted and recomputed resumes at the
start of its current block and reproduces the same greedy output.
"""

from dataclasses import dataclass, field

import torch

from vllm_dlm.config import DecodingParams
from vllm_dlm.decoding.remasking import dream_propose, llada_propose
from vllm_dlm.decoding.schedules import (
    dream_num_transfer_tokens,
    dream_transfer_probability,
    llada_num_transfer_tokens,
)


@dataclass
class RequestDecodeState:
    params: DecodingParams
    mask_token_id: int
    num_committed: int = 0  # generated tokens already emitted (multiple of block_length)
    step_in_block: int = 0
    steps_done: int = 0  # denoising steps taken since (re)admission
    # [gen_length] int64: the generation region, committed blocks then the canvas. A row of the
    # runner's canvas store (`decoding.batched_step`), or the request's own tensor.
    region: torch.Tensor | None = None
    generator: torch.Generator | None = None
    num_masked: int = 0  # masks left in the current block (kept by the batched step)
    _transfer_schedule: list[int] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        params: DecodingParams,
        mask_token_id: int,
        num_committed: int,
        device: torch.device,
        region: torch.Tensor | None = None,
    ) -> "RequestDecodeState":
        if num_committed % params.block_length:
            raise ValueError("a request can only resume at a block boundary")
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(params.seed)
        if region is None:
            region = torch.empty(params.gen_length, dtype=torch.long, device=device)
        region = region[: params.gen_length]
        region[num_committed:] = mask_token_id
        state = cls(params, mask_token_id, num_committed, region=region, generator=generator)
        state.steps_done = (num_committed // params.block_length) * params.steps_per_block
        return state

    @property
    def canvas(self) -> torch.Tensor:
        """[gen_length - num_committed]: the current block, then the masked future blocks."""
        return self.region[self.num_committed :]

    @property
    def canvas_length(self) -> int:
        return self.params.gen_length - self.num_committed

    @property
    def block_length(self) -> int:
        return self.params.block_length

    @property
    def finished(self) -> bool:
        return self.num_committed >= self.params.gen_length

    def next_step_is_full_pass(self) -> bool:
        """Whether the next step recomputes the whole sequence: every step of cache `none`; for
        `prefix`/`dual` the first step of a block, and with full-pass eviction the first
        evict_delay + 1 (the last of them selects the kept tokens). The scheduler plans the same."""
        p = self.params
        return p.cache == "none" or p.eviction.is_full_pass(self.step_in_block)

    def begin_step(self) -> int | None:
        """Host side of a step, before its device work: how many masked positions it commits
        (None: threshold decoding decides on the device). LLaDA's count comes from the block's
        schedule; Dream's needs the masks left, which the caller passes in `num_masked`."""
        p = self.params
        self.steps_done += 1
        if self.step_in_block == 0:
            # A block is untouched until it is the current one: all of it is masked.
            self.num_masked = self.block_length
            if p.family == "llada":
                self._transfer_schedule = llada_num_transfer_tokens(self.block_length, p.steps_per_block)
        if p.threshold is not None:
            return None
        if p.family == "llada":
            return self._transfer_schedule[self.step_in_block]
        return dream_num_transfer_tokens(self.num_masked, self.step_in_block, p.steps_per_block)

    def end_step(self, masks_left: int) -> bool:
        """Host side after the device work (`masks_left` in the current block): whether the
        block is complete. A complete block is committed (the canvas moves past it)."""
        self.num_masked = masks_left
        self.step_in_block += 1
        if masks_left and (self.step_in_block < self.params.steps_per_block or self.params.threshold is not None):
            return False  # threshold decoding runs until the block is filled
        # After its last scheduled step a block is committed as the reference leaves it, even if
        # the model proposed the mask token itself somewhere.
        self.num_committed += self.block_length
        self.step_in_block = 0
        return True

    def step(self, block_logits: torch.Tensor) -> torch.Tensor | None:
        """One denoising step of the current block, on its own (`decoding.batched_step` does the
        greedy rules for many requests at once).

        block_logits: [block_length, vocab] logits at the block's positions (Dream: already shifted).
        Returns the committed block [block_length] when this step completes it, else None.
        """
        p = self.params
        k = self.begin_step()
        block = self.canvas[: self.block_length]
        is_masked = block == self.mask_token_id
        if p.family == "llada":
            self._llada_step(block, is_masked, block_logits, k)
        else:
            self._dream_step(block, is_masked, block_logits, k)
        if p.family == "llada" and p.threshold is None:
            # The schedule commits exactly its counts: the masks left are known without waiting
            # for the GPU (no device sync per request and step).
            masks_left = sum(self._transfer_schedule[self.step_in_block + 1 :])
        else:
            masks_left = int((block == self.mask_token_id).sum())
        if not self.end_step(masks_left):
            return None
        return block.clone()

    def _commit_top(self, block, is_masked, x0, confidence, k: int) -> None:
        p = self.params
        confidence = torch.where(is_masked, confidence, torch.full_like(confidence, -torch.inf))
        if p.threshold is not None:
            # Fast-dLLM: the most confident position, plus every one at or above the threshold.
            index = (is_masked & (confidence >= p.threshold)).nonzero().squeeze(-1)
            block[index] = x0[index]
            top = confidence.argmax()
            block[top] = x0[top]
            return
        if k <= 0:
            return
        if p.family == "dream" and p.alg_temp > 0:
            weights = torch.softmax(confidence / p.alg_temp, dim=-1)
            index = torch.multinomial(weights, k, generator=self.generator)
        else:
            index = torch.topk(confidence, k).indices
        block[index] = x0[index]

    def _llada_step(self, block, is_masked, logits, k: int | None) -> None:
        p = self.params
        x0, confidence = llada_propose(logits, p.remasking, p.temperature, self.generator)
        x0 = torch.where(is_masked, x0, block)
        self._commit_top(block, is_masked, x0, confidence, k or 0)

    def _dream_step(self, block, is_masked, logits, k: int | None) -> None:
        p = self.params
        masked_idx = is_masked.nonzero().squeeze(-1)
        if masked_idx.numel() == 0:
            return
        mask_logits = logits[masked_idx]
        if p.remasking == "origin":
            prob = dream_transfer_probability(self.step_in_block, p.steps_per_block)
            reveal = torch.rand(
                masked_idx.shape, device=logits.device, generator=self.generator
            ) < prob
            if bool(reveal.any()):
                x0, _ = dream_propose(
                    mask_logits[reveal], p.remasking, p.temperature, p.top_p, p.top_k, self.generator
                )
                block[masked_idx[reveal]] = x0
            return
        x0_masked, conf_masked = dream_propose(
            mask_logits, p.remasking, p.temperature, p.top_p, p.top_k, self.generator
        )
        x0 = block.clone()
        x0[masked_idx] = x0_masked
        confidence = torch.full(block.shape, -torch.inf, device=logits.device)
        confidence[masked_idx] = conf_masked
        self._commit_top(block, is_masked, x0, confidence, k or 0)
