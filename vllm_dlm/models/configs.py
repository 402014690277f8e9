"""HF config classes for LLaDA and Dream, so official checkpoints load without remote code.

LLaDA ships an OLMo-style config (`d_model`, `n_layers`, `n_heads`, `mlp_hidden_size`, ...); an
`attribute_map` exposes it under the Llama names that vLLM's layers read. Dream ships a Qwen2
config with `model_type: "Dream"` and a `mask_token_id`.

These configs deliberately have no `canvas_length`: that attribute makes vLLM 0.26 treat a model as
DiffusionGemma (`ModelConfig.is_diffusion`: temperature-1-only validation, a forced FlashAttention-4
upgrade on Hopper). The plugin sets up the draft-token ("canvas") path itself
(`vllm_dlm.engine.config_hook`).
"""

from transformers import PretrainedConfig, Qwen2Config

LLADA_MASK_TOKEN_ID = 126336  # LLaDA-8B's <|mdm_mask|>
DREAM_MASK_TOKEN_ID = 151666  # Dream-7B's <|mask|>


class LLaDAConfig(PretrainedConfig):
    model_type = "llada"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "num_key_value_heads": "n_kv_heads",
        "intermediate_size": "mlp_hidden_size",
        "max_position_embeddings": "max_sequence_length",
    }

    def __init__(
        self,
        d_model: int = 4096,
        n_layers: int = 32,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        mlp_hidden_size: int | None = 12288,
        mlp_ratio: int = 4,
        vocab_size: int = 126464,
        embedding_size: int | None = None,
        max_sequence_length: int = 4096,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-5,
        mask_token_id: int = LLADA_MASK_TOKEN_ID,
        weight_tying: bool = False,
        include_bias: bool = False,
        include_qkv_bias: bool = False,
        activation_type: str = "silu",
        block_type: str = "llama",
        layer_norm_type: str = "rms",
        alibi: bool = False,
        scale_logits: bool = False,
        **kwargs,
    ):
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads if n_kv_heads is not None else n_heads
        self.mlp_ratio = mlp_ratio
        self.mlp_hidden_size = mlp_hidden_size or mlp_ratio * d_model
        self.vocab_size = embedding_size or vocab_size
        self.embedding_size = embedding_size
        self.max_sequence_length = max_sequence_length
        self.rope_theta = rope_theta
        self.rope_parameters = {"rope_type": "default", "rope_theta": rope_theta}
        self.rms_norm_eps = rms_norm_eps
        self.mask_token_id = mask_token_id
        self.weight_tying = weight_tying
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.activation_type = activation_type
        self.block_type = block_type
        self.layer_norm_type = layer_norm_type
        self.alibi = alibi
        self.scale_logits = scale_logits
        # Llama names read by vLLM's LlamaModel.
        self.hidden_act = activation_type
        self.attention_bias = include_bias or include_qkv_bias
        self.mlp_bias = include_bias
        self.head_dim = d_model // n_heads
        kwargs["tie_word_embeddings"] = weight_tying
        super().__init__(**kwargs)
        self._check_supported()

    def _check_supported(self) -> None:
        unsupported = {
            "block_type": (self.block_type, "llama"),
            "activation_type": (self.activation_type, "silu"),
            "layer_norm_type": (self.layer_norm_type, "rms"),
            "alibi": (self.alibi, False),
            "scale_logits": (self.scale_logits, False),
        }
        for name, (value, expected) in unsupported.items():
            if value != expected:
                raise ValueError(f"LLaDA config {name}={value!r} is not supported (need {expected!r})")


class DreamConfig(Qwen2Config):
    model_type = "Dream"

    def __init__(self, mask_token_id: int = DREAM_MASK_TOKEN_ID, **kwargs):
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)
