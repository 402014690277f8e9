"""LLaDA (GSAI-ML/LLaDA-8B-*) for vLLM.

LLaDA's transformer is a Llama block stack (RMSNorm, NeoX RoPE, SwiGLU, no biases) trained as a
masked-diffusion model, so attention is bidirectional. vLLM's `LlamaForCausalLM` layers are reused
(tensor parallelism, quantization and fused QKV come with them); the official OLMo-style weight
names are renamed by a `WeightsMapper`. Bidirectionality is not a property of the layers but of the
attention metadata (`causal=False`), set by `DiffusionLMModelState.prepare_attn`.
"""

from collections.abc import Iterable

import torch

from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper


class LLaDAModelLM(LlamaForCausalLM):
    # Official names: model.transformer.{wte, blocks.N.*, ln_f, ff_out}.
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_prefix={
            "model.transformer.wte.": "model.embed_tokens.",
            "model.transformer.ln_f.": "model.norm.",
            "model.transformer.ff_out.": "lm_head.",
            "model.transformer.blocks.": "model.layers.",
        },
        orig_to_new_suffix={
            ".attn_norm.weight": ".input_layernorm.weight",
            ".ff_norm.weight": ".post_attention_layernorm.weight",
            ".q_proj.weight": ".self_attn.q_proj.weight",
            ".k_proj.weight": ".self_attn.k_proj.weight",
            ".v_proj.weight": ".self_attn.v_proj.weight",
            ".attn_out.weight": ".self_attn.o_proj.weight",
            ".ff_proj.weight": ".mlp.gate_proj.weight",
            ".up_proj.weight": ".mlp.up_proj.weight",
            ".ff_out.weight": ".mlp.down_proj.weight",
        },
    )

    @staticmethod
    def get_model_state_cls():
        from vllm_dlm.runner.model_state import DiffusionLMModelState

        return DiffusionLMModelState

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        loader = AutoWeightsLoader(
            self, skip_prefixes=(["lm_head."] if self.config.tie_word_embeddings else None)
        )
        return loader.load_weights(weights, mapper=self.hf_to_vllm_mapper)
