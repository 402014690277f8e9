"""Keep Model Runner V2's kernel warm-up inside the model's vocabulary.

On GPU, `Worker.compile_or_warm_up_model` runs `vllm.v1.worker.gpu.warmup.warmup_kernels`, which
prefills dummy requests whose prompt is `list(range(decode_query_len + 1))`. For a diffusion model
`decode_query_len` is the canvas (`max_gen_len`, up to 1024), so a small-vocabulary model (the
bundled `models/llada-ruler-tiny` has 448 tokens) gets token ids past its embedding table: a CUDA
device-side assert during engine start (CPU workers do not run this warm-up). This wraps the worker's
`execute_model` for the duration of the warm-up so every new request's prompt ids are taken modulo
the vocabulary size; the warm-up is otherwise unchanged (same shapes, same kernels).

Breaks if: vLLM renames `gpu_worker.warmup_kernels` or changes its signature (then `install` raises
at plugin load, checked by tests/test_warmup_vocab.py).
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


def install() -> None:
    from vllm.v1.worker import gpu_worker

    original = gpu_worker.warmup_kernels
    if getattr(original, "_dlm_within_vocab", False):
        return

    def warmup_kernels(model_runner, worker_execute_model, worker_sample_tokens):
        vocab_size = model_runner.model_config.get_vocab_size()
        return original(
            model_runner, within_vocab(worker_execute_model, vocab_size), worker_sample_tokens
        )

    warmup_kernels._dlm_within_vocab = True
    gpu_worker.warmup_kernels = warmup_kernels
