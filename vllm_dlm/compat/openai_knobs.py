"""OpenAI server: diffusion knobs as top-level `extra_body` fields.

vLLM's own route for custom per-request args is `extra_body={"vllm_xargs": {...}}`, which lands in
`SamplingParams.extra_args` and works unchanged. For convenience the knobs are also accepted under
their own names (`extra_body={"steps": 64, "block_length": 32}`): the request models allow extra
fields, and this wrapper copies ours into `extra_args` (explicit `vllm_xargs` win).

Breaks if: vLLM renames `to_sampling_params` on the completion / chat request models or stops
keeping unknown fields in `model_extra` (checked by tests/test_serve.py).
"""

import functools

from vllm_dlm.config import REQUEST_KNOBS


def _wrap(request_cls) -> None:
    stock = request_cls.to_sampling_params
    if getattr(stock, "_vllm_dlm", False):
        return

    @functools.wraps(stock)
    def to_sampling_params(self, *args, **kwargs):
        params = stock(self, *args, **kwargs)
        knobs = {k: v for k, v in (self.model_extra or {}).items() if k in REQUEST_KNOBS}
        if knobs:
            params.extra_args = {**knobs, **(params.extra_args or {})}
        return params

    to_sampling_params._vllm_dlm = True
    request_cls.to_sampling_params = to_sampling_params


def install() -> None:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    _wrap(CompletionRequest)
    _wrap(ChatCompletionRequest)
