"""Dream (Dream-org/Dream-v0-*-7B) for vLLM.

Dream is Qwen2 (QKV bias, GQA, SwiGLU) trained as a masked-diffusion model; its checkpoint uses the
Qwen2 weight names, so vLLM's `Qwen2ForCausalLM` is reused as is. Two things differ from Qwen2 and
live outside the layers: attention is bidirectional (`DiffusionLMModelState.prepare_attn`), and the
logits for position i are read from hidden state i-1 ("shifted" logits, as Dream was trained from
an autoregressive Qwen2.5), which `DiffusionLMModelState.prepare_inputs` applies.
"""

from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM


class DreamModel(Qwen2ForCausalLM):
    @staticmethod
    def get_model_state_cls():
        from vllm_dlm.runner.model_state import DiffusionLMModelState

        return DiffusionLMModelState
