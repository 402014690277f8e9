"""Request admission for LLaDA/Dream: our knob validation replaces vLLM's stock diffusion rules.

Why: vLLM 0.26 validates every diffusion-model request with DiffusionGemma's rules
(`SamplingParams._validate_diffusion`: temperature must be 1.0, no seed), which would reject
LLaDA/Dream's greedy (`temperature=0`) and seeded requests. For our architectures that check is
replaced by `vllm_dlm.config.resolve_decoding_params` plus the checks that need the tokenized prompt,
run at the end of `InputProcessor.process_inputs` (front-end process). A ValueError there is an
HTTP 400 in `vllm serve` and an exception from `LLM.generate`; the engine never sees the request.

Breaks if: vLLM renames `SamplingParams._validate_diffusion` or `InputProcessor.process_inputs`, or
stops raising its validation errors from them (checked by tests/test_request_validation.py).
"""

import functools

from vllm_dlm.config import ServerDefaults, resolve_decoding_params
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
}


def validate_request(sampling_params, model_config, prompt_len: int | None) -> None:
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
    if prompt_len is not None and prompt_len + params.gen_length >= model_config.max_model_len:
        raise ValueError(
            f"prompt ({prompt_len} tokens) + max_tokens ({params.gen_length}) must be less than "
            f"max_model_len ({model_config.max_model_len})"
        )


def install() -> None:
    from vllm.sampling_params import SamplingParams
    from vllm.v1.engine.input_processor import InputProcessor

    if getattr(SamplingParams._validate_diffusion, "_vllm_dlm", False):
        return
    stock_validate = SamplingParams._validate_diffusion

    @functools.wraps(stock_validate)
    def _validate_diffusion(self, model_config):
        if model_family(model_config.hf_config) is None:
            return stock_validate(self, model_config)
        # Knobs are checked in process_inputs, where max_tokens and the prompt are final.

    _validate_diffusion._vllm_dlm = True
    SamplingParams._validate_diffusion = _validate_diffusion

    stock_process = InputProcessor.process_inputs

    @functools.wraps(stock_process)
    def process_inputs(self, *args, **kwargs):
        request = stock_process(self, *args, **kwargs)
        if request.sampling_params is not None and model_family(self.model_config.hf_config):
            prompt_len = len(request.prompt_token_ids) if request.prompt_token_ids else None
            validate_request(request.sampling_params, self.model_config, prompt_len)
        return request

    InputProcessor.process_inputs = process_inputs
