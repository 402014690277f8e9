"""Tiny random LLaDA / Dream checkpoints in the official HF layouts, with a locally built tokenizer.

Real weights cannot be downloaded here; tests and the README demo load these through the plugin
exactly as they would load LLaDA-8B or Dream-7B (config.json, model.safetensors, tokenizer files,
generation_config.json). Weights are random but scaled so that logits are peaked (greedy argmax and
top-k are far from ties, so two fp32 implementations agree token for token): embeddings ~N(0, 1),
lm head ~N(0, 0.3^2) (logit std ~0.3 * sqrt(hidden)), other linears ~N(0, 0.05^2), norm weights
1 + N(0, 0.05^2). The lm-head row of the mask token is zero, so (like a trained model) greedy
decoding never predicts the mask token: its logit is 0 while the top logit is several units up.

Everything is deterministic in `seed` (weights from a seeded torch.Generator; the tokenizer is a
byte-level BPE trained on the embedded CORPUS, so any text round-trips).
Default sizes give head_dim 32, the smallest vLLM's CPU attention accepts.

    python -m vllm_dlm.tools.tiny_checkpoint --family llada --out DIR [--seed N]
"""

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

CORPUS = """
Once upon a time there was a small robot who liked to count stars. Every night it climbed the hill
behind the village and wrote numbers into a notebook: 1, 2, 3, 10, 42, 100, 2024. The robot asked
the old librarian: who are you, and what is the answer? She said: the key is 7, the value is 19.
Tell me a short story about a fox, a river and a bridge. The quick brown fox jumps over the lazy dog.
Hello, how are you today? I am fine, thank you! Question: what is 3 + 4? Answer: 7.
Diffusion language models unmask tokens in parallel; blocks are denoised from left to right.
"""

SPECIAL_TOKENS = {
    "llada": {
        "bos": "<|startoftext|>", "eos": "<|endoftext|>", "mask": "<|mdm_mask|>",
        "extra": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    },
    "dream": {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "mask": "<|mask|>",
              "extra": ["<|im_start|>", "<|im_end|>"]},
}

CHAT_TEMPLATES = {
    "llada": (
        "{{ '<|startoftext|>' }}{% for m in messages %}"
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}"
        "{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "dream": (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
}


def build_tokenizer(out: Path, family: str, vocab_size: int = 384) -> dict[str, int]:
    """Byte-level BPE trained on CORPUS, saved in HF format (tokenizer.json, tokenizer_config.json,
    special_tokens_map.json). The special tokens take the last ids. Returns
    {"bos", "eos", "mask", "eot" (<|eot_id|> / <|im_end|>), "size" (tokenizer length)}."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = SPECIAL_TOKENS[family]
    names = list(dict.fromkeys([specials["bos"], specials["eos"], specials["mask"], *specials["extra"]]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(names), special_tokens=[], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    tok.add_special_tokens(names)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": specials["bos"], "eos_token": specials["eos"], "pad_token": specials["eos"],
        "mask_token": specials["mask"], "additional_special_tokens": specials["extra"],
        "chat_template": CHAT_TEMPLATES[family], "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "mask_token")}, indent=1))
    ids = {name: tok.token_to_id(name) for name in names}
    return {"bos": ids[specials["bos"]], "eos": ids[specials["eos"]], "mask": ids[specials["mask"]],
            "eot": ids.get("<|eot_id|>", ids.get("<|im_end|>")), "size": tok.get_vocab_size()}


def _weights(shapes: dict[str, tuple], seed: int) -> dict[str, torch.Tensor]:
    """Random fp32 tensors for `shapes` (name -> shape), drawn in dict order from one generator."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if len(shape) == 1:  # norms: ~1; biases: small
            base = 0.0 if name.endswith(".bias") else 1.0
            out[name] = base + 0.05 * torch.randn(shape, generator=g)
        elif "wte" in name or "embed_tokens" in name:
            out[name] = torch.randn(shape, generator=g)
        elif name in ("model.transformer.ff_out.weight", "lm_head.weight"):
            out[name] = 0.3 * torch.randn(shape, generator=g)  # logit std ~ 0.3 * sqrt(hidden)
        else:
            out[name] = 0.05 * torch.randn(shape, generator=g)
    return out


def make_tiny_checkpoint(out_dir, family: str, *, seed: int = 0, num_layers: int = 2,
                         hidden_size: int = 128, num_heads: int = 4, num_kv_heads: int | None = None,
                         intermediate_size: int = 256, max_position: int = 1024,
                         dtype: str = "float32") -> Path:
    """Write a random `family` ("llada" | "dream") checkpoint in the official HF layout to `out_dir`.

    num_kv_heads defaults to num_heads (LLaDA) or num_heads // 2 (Dream); head_dim is
    hidden_size // num_heads. vocab_size is the tokenizer length padded up to a multiple of 64.
    Returns the directory.
    """
    if family not in SPECIAL_TOKENS:
        raise ValueError(f"family must be 'llada' or 'dream', got {family!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = build_tokenizer(out, family)
    vocab = -(-ids["size"] // 64) * 64
    d, hd, mlp = hidden_size, hidden_size // num_heads, intermediate_size
    kv = num_kv_heads or (num_heads if family == "llada" else max(1, num_heads // 2))
    if hidden_size % num_heads or num_heads % kv or hd % 2:
        raise ValueError(f"need hidden_size % num_heads == 0, num_heads % num_kv_heads == 0 and an "
                         f"even head_dim (got {hidden_size=}, {num_heads=}, num_kv_heads={kv})")
    if family == "llada":
        config = {
            "architectures": ["LLaDAModelLM"], "model_type": "llada", "d_model": d,
            "n_layers": num_layers, "n_heads": num_heads, "n_kv_heads": kv, "mlp_hidden_size": mlp,
            "mlp_ratio": 4, "vocab_size": vocab, "embedding_size": vocab,
            "max_sequence_length": max_position, "rope": True, "rope_theta": 500000.0,
            "rope_full_precision": True, "rms_norm_eps": 1e-05, "layer_norm_type": "rms",
            "block_type": "llama", "activation_type": "silu", "include_bias": False,
            "include_qkv_bias": False, "weight_tying": False, "alibi": False, "scale_logits": False,
            "input_emb_norm": False, "attention_layer_norm": False,
            "mask_token_id": ids["mask"], "eos_token_id": ids["eos"], "pad_token_id": ids["eos"],
            "bos_token_id": ids["bos"], "torch_dtype": dtype,
        }
        t = "model.transformer."
        shapes = {t + "wte.weight": (vocab, d), t + "ln_f.weight": (d,), t + "ff_out.weight": (vocab, d)}
        for i in range(num_layers):
            b = f"{t}blocks.{i}."
            shapes.update({
                b + "attn_norm.weight": (d,), b + "ff_norm.weight": (d,),
                b + "q_proj.weight": (num_heads * hd, d), b + "k_proj.weight": (kv * hd, d),
                b + "v_proj.weight": (kv * hd, d), b + "attn_out.weight": (d, num_heads * hd),
                b + "ff_proj.weight": (mlp, d), b + "up_proj.weight": (mlp, d), b + "ff_out.weight": (d, mlp),
            })
        eos_ids = [ids["eos"], ids["eot"]]
    else:
        config = {
            "architectures": ["DreamModel"], "model_type": "Dream", "hidden_size": d,
            "intermediate_size": mlp, "num_hidden_layers": num_layers, "num_attention_heads": num_heads,
            "num_key_value_heads": kv, "max_position_embeddings": max_position, "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0, "vocab_size": vocab, "hidden_act": "silu",
            "tie_word_embeddings": False, "mask_token_id": ids["mask"], "pad_token_id": ids["eos"],
            "bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "torch_dtype": dtype,
            "use_sliding_window": False, "sliding_window": None, "attention_dropout": 0.0,
            "rope_scaling": None,
        }
        shapes = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,), "lm_head.weight": (vocab, d)}
        for i in range(num_layers):
            b = f"model.layers.{i}."
            shapes.update({
                b + "input_layernorm.weight": (d,), b + "post_attention_layernorm.weight": (d,),
                b + "self_attn.q_proj.weight": (num_heads * hd, d), b + "self_attn.q_proj.bias": (num_heads * hd,),
                b + "self_attn.k_proj.weight": (kv * hd, d), b + "self_attn.k_proj.bias": (kv * hd,),
                b + "self_attn.v_proj.weight": (kv * hd, d), b + "self_attn.v_proj.bias": (kv * hd,),
                b + "self_attn.o_proj.weight": (d, num_heads * hd),
                b + "mlp.gate_proj.weight": (mlp, d), b + "mlp.up_proj.weight": (mlp, d),
                b + "mlp.down_proj.weight": (d, mlp),
            })
        eos_ids = [ids["eos"], ids["eot"]]
    weights = _weights(shapes, seed)
    lm_head = "model.transformer.ff_out.weight" if family == "llada" else "lm_head.weight"
    weights[lm_head][ids["mask"]] = 0.0  # the mask token is never the argmax
    torch_dtype = getattr(torch, dtype)
    save_file({k: v.to(torch_dtype).contiguous() for k, v in weights.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": ids["bos"], "eos_token_id": eos_ids, "pad_token_id": ids["eos"],
         "max_new_tokens": 64}, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=["llada", "dream"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_tiny_checkpoint(args.out, args.family, seed=args.seed))


if __name__ == "__main__":
    main()
