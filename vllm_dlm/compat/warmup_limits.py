"""Keep Model Runner V2's kernel warm-up inside the model's vocabulary and max_model_len.

On GPU, `Worker.compile_or_warm_up_model` runs `vllm.v1.worker.gpu.warmup.warmup_kernels`, which
prefills dummy requests whose prompt is `list(range(decode_query_len + 1))` and then decodes
`decode_query_len` more tokens. For a diffusion model `decode_query_len` is the canvas
(`max_gen_len`, up to 1024), which breaks two assumptions (CPU workers do not run this warm-up):
- vocabulary: a small model (the bundled `models/llada-ruler-tiny` has 448 tokens) gets token ids
  past its embedding table, a CUDA device-side assert during engine start. Every new request's
  prompt ids are taken modulo the vocabulary size.
- length: the warm-up sequence is 2 x canvas + 1 tokens; with max_model_len below that (the default
  canvas is min(1024, max_model_len), so any max_model_len under 2049) its block ids run past the
  block table's rows, an illegal memory access at engine start (seen with max_model_len 1344 and
  max_num_seqs 4). For the warm-up only, the runner's canvas (`decode_query_len`,
  `num_speculative_steps`) is capped at (max_model_len - 1) // 2.
The warm-up is otherwise unchanged (same kernels; CUDA graph capture is separate and unaffected).

Breaks if: vLLM renames `gpu_worker.warmup_kernels` or changes its signature (then `install` raises
at plugin load, checked by tests/test_warmup_limits.py), or renames the runner attributes above.
"""

from collections.abc import Callable
from typing import Any


def within_vocab(execute_model: Callable[[Any], Any], vocab_size: int) -> Callable[[Any], Any]:
    """`execute_model` with every new request's prompt/prefill token ids reduced mod `vocab_size`."""

    def execute(scheduler_output):
        for new_req in scheduler_output.scheduled_new_reqs:
            for name in ("prompt_token_ids", "prefill_token_ids"):
                ids = getattr(new_req, name)
                if ids is not None:
                    setattr(new_req, name, [t % vocab_size for t in ids])
        return execute_model(scheduler_output)

    return execute


def within_limits(warmup_kernels: Callable[..., Any]) -> Callable[..., Any]:
    """vLLM's `warmup_kernels` with ids inside the vocabulary and the sequence inside max_model_len."""

    def warmup(model_runner, worker_execute_model, worker_sample_tokens):
        vocab_size = model_runner.model_config.get_vocab_size()
        canvas = (model_runner.decode_query_len, model_runner.num_speculative_steps)
        cap = max(1, (model_runner.model_config.max_model_len - 1) // 2)
        model_runner.decode_query_len = min(canvas[0], cap)
        model_runner.num_speculative_steps = min(canvas[1], cap)
        try:
            return warmup_kernels(model_runner, within_vocab(worker_execute_model, vocab_size),
                                  worker_sample_tokens)
        finally:
            model_runner.decode_query_len, model_runner.num_speculative_steps = canvas

    warmup._dlm_within_limits = True
    return warmup


def install() -> None:
    from vllm.v1.worker import gpu_worker

    if not getattr(gpu_worker.warmup_kernels, "_dlm_within_limits", False):
        gpu_worker.warmup_kernels = within_limits(gpu_worker.warmup_kernels)
