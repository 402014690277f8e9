"""Request admission for LLaDA/Dream: the diffusion knobs are validated in the front end.

Why: vLLM has no hook for a model to validate its own request parameters with the tokenized prompt
in hand. `vllm_dlm.config.resolve_decoding_params` plus the prompt-length check therefore run at the
end of `InputProcessor.process_inputs` (front-end process), where max_tokens and the prompt are
final. A ValueError there is an HTTP 400 in `vllm serve` and an exception from `LLM.generate`; the
engine never sees the request. (LLaDA/Dream are not `is_diffusion` models to vLLM, so its
DiffusionGemma rules, temperature 1.0 only and no seed, do not apply: greedy and seeded requests
keep their usual meaning.)

Breaks if: vLLM renames `InputProcessor.process_inputs` or stops raising its validation errors from
it (checked by tests/test_request_validation.py).
"""

import functools

from vllm_dlm.config import SPARSED_KNOBS, ServerDefaults, resolve_decoding_params
from vllm_dlm.models import model_family

# SamplingParams features the denoising sampler does not implement: (attribute, is-set test).
_UNSUPPORTED = {
    "logprobs": lambda v: v is not None,
    "prompt_logprobs": lambda v: v is not None,
    "min_p": lambda v: v > 0,
    "presence_penalty": lambda v: v != 0,
    "frequency_penalty": lambda v: v != 0,
    "repetition_penalty": lambda v: v != 1,
    "min_tokens": lambda v: v > 0,
    "logit_bias": lambda v: bool(v),
    "allowed_token_ids": lambda v: bool(v),
    "bad_words": lambda v: bool(v),
    "structured_outputs": lambda v: v is not None,
}


def validate_request(sampling_params, model_config, prompt_len: int | None,
                     sparsed_backend: bool = False) -> None:
    family = model_family(model_config.hf_config)
    for name, is_set in _UNSUPPORTED.items():
        value = getattr(sampling_params, name, None)
        if value is not None and is_set(value):
            raise ValueError(f"{name} is not supported for diffusion LM ({family}) requests")
    defaults = getattr(model_config.hf_config, "dlm_server_defaults", None) or ServerDefaults()
    params = resolve_decoding_params(
        family,
        max_tokens=sampling_params.max_tokens,
        extra_args=sampling_params.extra_args,
        temperature=sampling_params.temperature,
        top_p=sampling_params.top_p,
        top_k=sampling_params.top_k,
        seed=sampling_params.seed,
        defaults=defaults,
    )
    if not sparsed_backend:
        for name in SPARSED_KNOBS:
            if name in (sampling_params.extra_args or {}):
                raise ValueError(f"{name} needs the sparsed attention backend (--attention-backend sparsed)")
    if prompt_len is not None and prompt_len + params.gen_length > model_config.max_model_len:
        raise ValueError(
            f"prompt ({prompt_len} tokens) + max_tokens ({params.gen_length}) must not exceed "
            f"max_model_len ({model_config.max_model_len})"
        )


def uses_sparsed_backend(vllm_config) -> bool:
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    return vllm_config.attention_config.backend == AttentionBackendEnum.CUSTOM


def install() -> None:
    from vllm.v1.engine.input_processor import InputProcessor

    if getattr(InputProcessor.process_inputs, "_vllm_dlm", False):
        return
    stock_process = InputProcessor.process_inputs

    @functools.wraps(stock_process)
    def process_inputs(self, *args, **kwargs):
        request = stock_process(self, *args, **kwargs)
        if request.sampling_params is not None and model_family(self.model_config.hf_config):
            prompt_len = len(request.prompt_token_ids) if request.prompt_token_ids else None
            validate_request(request.sampling_params, self.model_config, prompt_len,
                             sparsed_backend=uses_sparsed_backend(self.vllm_config))
        return request

    process_inputs._vllm_dlm = True
    InputProcessor.process_inputs = process_inputs
