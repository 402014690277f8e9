"""The official 8B-class configs (values from the published config.json files), written to a
directory so vLLM can build the model with `load_format="dummy"` (weights cannot be downloaded)."""

import json
import tempfile
from pathlib import Path

LLADA_8B = {
    "architectures": ["LLaDAModelLM"],
    "model_type": "llada",
    "d_model": 4096,
    "n_layers": 32,
    "n_heads": 32,
    "n_kv_heads": 32,
    "mlp_hidden_size": 12288,
    "mlp_ratio": 4,
    "vocab_size": 126464,
    "embedding_size": 126464,
    "max_sequence_length": 4096,
    "rope": True,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-05,
    "layer_norm_type": "rms",
    "block_type": "llama",
    "activation_type": "silu",
    "include_bias": False,
    "include_qkv_bias": False,
    "weight_tying": False,
    "mask_token_id": 126336,
    "eos_token_id": 126081,
    "pad_token_id": 126081,
    "torch_dtype": "bfloat16",
}

DREAM_7B = {
    "architectures": ["DreamModel"],
    "model_type": "Dream",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "vocab_size": 152064,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "mask_token_id": 151666,
    "pad_token_id": 151643,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "torch_dtype": "bfloat16",
}


def write_config_dir(config: dict, max_len: int | None = None) -> str:
    """A checkpoint directory holding only config.json (use with load_format='dummy')."""
    config = dict(config)
    if max_len is not None:
        key = "max_sequence_length" if config["model_type"] == "llada" else "max_position_embeddings"
        config[key] = max_len
    path = Path(tempfile.mkdtemp(prefix=f"{config['model_type']}-dummy-"))
    (path / "config.json").write_text(json.dumps(config, indent=1))
    return str(path)
