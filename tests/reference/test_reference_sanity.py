"""Sanity of the test fixtures themselves: tiny checkpoints (layout, tokenizer, peaked logits) and
the plain-torch references (forward vs an independent formulation, bidirectionality, and the
invariants of the LLaDA / Dream generate loops). Needs only torch, safetensors, transformers.

Run alone (without tests/conftest.py, which starts vLLM):
    python -m pytest tests/reference -q --confcutdir=tests/reference
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tests.reference.dream import DreamReference, dream_generate, sample_tokens
from tests.reference.llada import LLaDAReference, get_num_transfer_tokens, llada_generate
from vllm_dlm.tools.tiny_checkpoint import make_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
SIZES = dict(num_layers=2, hidden_size=128, num_heads=4, intermediate_size=256, max_position=512)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls: one intra-op thread is fastest, and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("llada"), "llada", seed=0, **SIZES)


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("dream"), "dream", seed=1, num_kv_heads=2, **SIZES)


@pytest.fixture(scope="module")
def llada(llada_dir):
    return LLaDAReference.from_pretrained(llada_dir).eval()


@pytest.fixture(scope="module")
def dream(dream_dir):
    return DreamReference.from_pretrained(dream_dir).eval()


def config(path) -> dict:
    return json.loads((Path(path) / "config.json").read_text())


def random_prompt(cfg: dict, length: int, seed: int, batch: int = 1) -> torch.Tensor:
    """[batch, length] ordinary (non-special) token ids."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 300, (batch, length), generator=g)


class Recorder(torch.nn.Module):
    """Wraps a model: records every canvas it is called on; `edit(logits)` may rewrite logits."""

    def __init__(self, model, edit=None):
        super().__init__()
        self.model, self.edit, self.calls = model, edit, []

    def forward(self, x):
        self.calls.append(x.clone())
        logits = self.model(x)
        return logits if self.edit is None else self.edit(logits)


# ---------------------------------------------------------------- checkpoints and tokenizers


def expected_weight_shapes(family: str, cfg: dict) -> dict:
    V = cfg["vocab_size"]
    if family == "llada":
        d, nh, nkv, mlp = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["mlp_hidden_size"]
        hd, t = d // nh, "model.transformer."
        shapes = {t + "wte.weight": (V, d), t + "ln_f.weight": (d,), t + "ff_out.weight": (V, d)}
        for i in range(cfg["n_layers"]):
            b = f"{t}blocks.{i}."
            shapes.update({b + "attn_norm.weight": (d,), b + "ff_norm.weight": (d,),
                           b + "q_proj.weight": (nh * hd, d), b + "k_proj.weight": (nkv * hd, d),
                           b + "v_proj.weight": (nkv * hd, d), b + "attn_out.weight": (d, nh * hd),
                           b + "ff_proj.weight": (mlp, d), b + "up_proj.weight": (mlp, d),
                           b + "ff_out.weight": (d, mlp)})
        return shapes
    d, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    mlp, hd = cfg["intermediate_size"], d // nh
    shapes = {"model.embed_tokens.weight": (V, d), "model.norm.weight": (d,), "lm_head.weight": (V, d)}
    for i in range(cfg["num_hidden_layers"]):
        b = f"model.layers.{i}."
        shapes.update({b + "input_layernorm.weight": (d,), b + "post_attention_layernorm.weight": (d,),
                       b + "self_attn.o_proj.weight": (d, nh * hd),
                       b + "mlp.gate_proj.weight": (mlp, d), b + "mlp.up_proj.weight": (mlp, d),
                       b + "mlp.down_proj.weight": (d, mlp)})
        for name, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
            shapes[f"{b}self_attn.{name}_proj.weight"] = (rows, d)
            shapes[f"{b}self_attn.{name}_proj.bias"] = (rows,)
    return shapes


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_checkpoint_layout(family, llada_dir, dream_dir):
    path = llada_dir if family == "llada" else dream_dir
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json"):
        assert (path / name).is_file(), name
    cfg = config(path)
    weights = load_file(path / "model.safetensors")
    assert {k: tuple(v.shape) for k, v in weights.items()} == expected_weight_shapes(family, cfg)
    assert all(v.dtype == torch.float32 for v in weights.values())
    assert cfg["vocab_size"] % 64 == 0
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen["max_new_tokens"] == 64 and gen["pad_token_id"] == cfg["pad_token_id"]
    if family == "llada":
        assert cfg["architectures"] == ["LLaDAModelLM"] and cfg["model_type"] == "llada"
        assert cfg["embedding_size"] == cfg["vocab_size"] and cfg["n_kv_heads"] == cfg["n_heads"]
        assert cfg["rope_theta"] == 500000.0 and cfg["block_type"] == "llama" and not cfg["weight_tying"]
    else:
        assert cfg["architectures"] == ["DreamModel"] and cfg["model_type"] == "Dream"
        assert cfg["num_key_value_heads"] == 2 and cfg["rope_theta"] == 1000000.0
        assert cfg["tie_word_embeddings"] is False and cfg["sliding_window"] is None
    assert gen["eos_token_id"][0] == cfg["eos_token_id"]


def test_checkpoint_is_deterministic_in_seed(tmp_path):
    kw = dict(num_layers=1, hidden_size=64, num_heads=2, intermediate_size=64)
    a = make_tiny_checkpoint(tmp_path / "a", "dream", seed=5, **kw)
    b = make_tiny_checkpoint(tmp_path / "b", "dream", seed=5, **kw)
    c = make_tiny_checkpoint(tmp_path / "c", "dream", seed=6, **kw)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    wa, wb, wc = (load_file(p / "model.safetensors") for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["lm_head.weight"], wc["lm_head.weight"])


def test_bfloat16_checkpoint_loads(tmp_path):
    path = make_tiny_checkpoint(tmp_path, "llada", num_layers=1, hidden_size=64, num_heads=2,
                                intermediate_size=64, dtype="bfloat16")
    assert config(path)["torch_dtype"] == "bfloat16"
    assert load_file(path / "model.safetensors")["model.transformer.wte.weight"].dtype == torch.bfloat16
    logits = LLaDAReference.from_pretrained(path)(torch.tensor([[1, 2, 3]]))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_cli_writes_a_checkpoint(tmp_path):
    subprocess.run([sys.executable, "-m", "vllm_dlm.tools.tiny_checkpoint", "--family", "llada",
                    "--out", str(tmp_path / "ck"), "--seed", "3"], cwd=REPO, check=True,
                   capture_output=True)
    assert config(tmp_path / "ck")["model_type"] == "llada"
    assert (tmp_path / "ck" / "model.safetensors").is_file()


SPECIALS = {
    "llada": {"bos_token_id": "<|startoftext|>", "eos_token_id": "<|endoftext|>",
              "pad_token_id": "<|endoftext|>", "mask_token_id": "<|mdm_mask|>"},
    "dream": {"bos_token_id": "<|endoftext|>", "eos_token_id": "<|endoftext|>",
              "pad_token_id": "<|endoftext|>", "mask_token_id": "<|mask|>"},
}
EXTRA = {"llada": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
         "dream": ["<|im_start|>", "<|im_end|>"]}
CHAT = {
    "llada": "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nHi 42!<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "dream": "<|im_start|>user\nHi 42!<|im_end|>\n<|im_start|>assistant\n",
}


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_tokenizer(family, llada_dir, dream_dir):
    from transformers import AutoTokenizer

    path = llada_dir if family == "llada" else dream_dir
    cfg = config(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) <= cfg["vocab_size"]
    for key, text in SPECIALS[family].items():
        assert tok.convert_tokens_to_ids(text) == cfg[key], key
        assert tok.encode(text, add_special_tokens=False) == [cfg[key]], key
    assert tok.mask_token_id == cfg["mask_token_id"] and tok.eos_token_id == cfg["eos_token_id"]
    assert tok.pad_token_id == cfg["pad_token_id"] and tok.bos_token_id == cfg["bos_token_id"]
    extra_ids = [tok.convert_tokens_to_ids(t) for t in EXTRA[family]]
    assert len(set(extra_ids)) == len(extra_ids) and all(i is not None and i < len(tok) for i in extra_ids)
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [cfg["eos_token_id"], extra_ids[-1]]
    for text in ["Hello, how are you today? 3 + 4 = 7.", "Ünïcode ✓ 漢字\t\n  x=3.14; {json: [1]}", ""]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        assert all(i < len(tok) for i in ids)
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi 42!"}], add_generation_prompt=True,
                                   tokenize=False)
    assert chat == CHAT[family]
    ids = tok.encode(chat, add_special_tokens=False)
    assert tok.decode(ids) == chat and "Hi 42!" in tok.decode(ids, skip_special_tokens=True)


# ---------------------------------------------------------------- forward passes


def rms(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope_complex(x, theta):
    """NeoX rotary via complex multiplication of the pairs (x[i], x[i + D/2]). x [B, H, L, D]."""
    half = x.shape[-1] // 2
    freqs = torch.arange(x.shape[2], dtype=torch.float64)[:, None] * theta ** (
        -torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])
    z = torch.complex(x[..., :half].double(), x[..., half:].double()) * torch.polar(
        torch.ones_like(freqs), freqs)
    return torch.cat([z.real, z.imag], dim=-1).float()


def independent_forward(w: dict, ids, *, layers, nh, nkv, theta, eps, names: dict) -> torch.Tensor:
    """A second formulation (complex rotary, SDPA, kv heads by index) to cross-check references."""
    B, L = ids.shape
    h = w[names["embed"]][ids]
    d = h.shape[-1]
    hd = d // nh
    kv_of_head = torch.arange(nh) // (nh // nkv)
    for i in range(layers):
        n = {k: v.format(i) for k, v in names.items()}
        x = rms(h, w[n["in_norm"]], eps)

        def proj(key, heads):
            y = F.linear(x, w[n[key] + ".weight"], w.get(n[key] + ".bias"))
            return y.view(B, L, heads, hd).transpose(1, 2)

        q, k, v = proj("q", nh), proj("k", nkv), proj("v", nkv)
        q, k = rope_complex(q, theta), rope_complex(k, theta)
        att = F.scaled_dot_product_attention(q, k[:, kv_of_head], v[:, kv_of_head], is_causal=False)
        h = h + F.linear(att.transpose(1, 2).reshape(B, L, d), w[n["o"] + ".weight"])
        x = rms(h, w[n["post_norm"]], eps)
        h = h + F.linear(F.silu(F.linear(x, w[n["gate"]])) * F.linear(x, w[n["up"]]), w[n["down"]])
    return F.linear(rms(h, w[names["final_norm"]], eps), w[names["lm_head"]])


LLADA_NAMES = {"embed": "model.transformer.wte.weight", "final_norm": "model.transformer.ln_f.weight",
               "lm_head": "model.transformer.ff_out.weight",
               **{k: "model.transformer.blocks.{}." + v for k, v in {
                   "in_norm": "attn_norm.weight", "post_norm": "ff_norm.weight", "q": "q_proj",
                   "k": "k_proj", "v": "v_proj", "o": "attn_out", "gate": "ff_proj.weight",
                   "up": "up_proj.weight", "down": "ff_out.weight"}.items()}}
DREAM_NAMES = {"embed": "model.embed_tokens.weight", "final_norm": "model.norm.weight",
               "lm_head": "lm_head.weight",
               **{k: "model.layers.{}." + v for k, v in {
                   "in_norm": "input_layernorm.weight", "post_norm": "post_attention_layernorm.weight",
                   "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                   "o": "self_attn.o_proj", "gate": "mlp.gate_proj.weight", "up": "mlp.up_proj.weight",
                   "down": "mlp.down_proj.weight"}.items()}}


def test_llada_forward_matches_independent_formulation(llada, llada_dir):
    cfg = config(llada_dir)
    ids = random_prompt(cfg, 37, seed=0, batch=2)
    expected = independent_forward(
        load_file(llada_dir / "model.safetensors"), ids, layers=cfg["n_layers"], nh=cfg["n_heads"],
        nkv=cfg["n_kv_heads"], theta=cfg["rope_theta"], eps=cfg["rms_norm_eps"], names=LLADA_NAMES)
    logits = llada(ids)
    assert logits.shape == (2, 37, cfg["vocab_size"]) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, atol=2e-4, rtol=1e-4)


def test_dream_forward_matches_independent_formulation(dream, dream_dir):
    cfg = config(dream_dir)
    ids = random_prompt(cfg, 29, seed=1, batch=2)
    expected = independent_forward(
        load_file(dream_dir / "model.safetensors"), ids, layers=cfg["num_hidden_layers"],
        nh=cfg["num_attention_heads"], nkv=cfg["num_key_value_heads"], theta=cfg["rope_theta"],
        eps=cfg["rms_norm_eps"], names=DREAM_NAMES)
    logits = dream(ids)
    assert logits.shape == (2, 29, cfg["vocab_size"]) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_logits_are_peaked(family, llada, dream, llada_dir):
    model = llada if family == "llada" else dream
    ids = random_prompt(config(llada_dir), 64, seed=2, batch=4)
    ids[:, 32:] = model.config["mask_token_id"]  # half masked, as during generation
    logits = model(ids)
    top2 = logits.topk(2, dim=-1).values
    gap = top2[..., 0] - top2[..., 1]
    assert logits.std() > 2.0
    assert gap.median() > 0.2 and (gap > 0.05).float().mean() > 0.85
    # The mask token (zero lm-head row, logit 0) is never the argmax.
    assert (logits.argmax(-1) != model.config["mask_token_id"]).all()


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_attention_is_bidirectional(family, llada, dream, llada_dir):
    model = llada if family == "llada" else dream
    ids = random_prompt(config(llada_dir), 20, seed=3)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 300
    a, b = model(ids), model(changed)
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-3  # the first position sees the last one
    # Rotary positions matter: swapping two tokens changes the logits at an untouched position.
    swapped = ids.clone()
    swapped[0, [3, 12]] = ids[0, [12, 3]]
    assert (model(swapped)[0, 7] - a[0, 7]).abs().max() > 1e-3


# ---------------------------------------------------------------- LLaDA generate


def test_get_num_transfer_tokens():
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[0, :10] = True
    mask[1, :] = True
    mask[2, :3] = True
    out = get_num_transfer_tokens(mask, 4)
    assert out.dtype == torch.int64
    assert out.tolist() == [[3, 3, 2, 2], [3, 3, 3, 3], [1, 1, 1, 0]]


LLADA_CASES = [  # (gen_length, steps, block_length, temperature, remasking, cfg_scale)
    (16, 16, 8, 0.0, "low_confidence", 0.0),
    (24, 6, 8, 0.0, "low_confidence", 0.0),
    (16, 4, 16, 0.0, "random", 0.0),
    (16, 8, 8, 1.0, "low_confidence", 0.0),
    (16, 8, 16, 0.5, "random", 1.5),
]


@pytest.mark.parametrize("case", LLADA_CASES, ids=str)
def test_llada_generate_invariants(llada, case):
    g_len, steps, block, temperature, remasking, cfg_scale = case
    mask_id = llada.config["mask_token_id"]
    prompt = random_prompt(llada.config, 7, seed=4)

    def run(seed):
        rec = Recorder(llada)
        out = llada_generate(rec, prompt, steps=steps, gen_length=g_len, block_length=block,
                             temperature=temperature, remasking=remasking, mask_id=mask_id,
                             cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(seed))
        return out, rec.calls

    out, calls = run(0)
    assert out.shape == (1, 7 + g_len)
    assert torch.equal(out[:, :7], prompt)
    assert not (out == mask_id).any()
    assert len(calls) == steps
    assert torch.equal(run(0)[0], out)  # deterministic (greedy, or same generator seed)
    # Semi-autoregressive: while block b is denoised, later blocks stay all-mask, and each step
    # commits exactly get_num_transfer_tokens(...)[step] positions, all inside the block.
    per_block = steps // (g_len // block)
    canvases = [c[:1] for c in calls] + [out]
    for n, (before, after) in enumerate(zip(canvases[:-1], canvases[1:])):
        b, i = divmod(n, per_block)
        lo, hi = 7 + b * block, 7 + (b + 1) * block
        assert (before[0, hi:] == mask_id).all()
        changed = (before != after)[0]
        expected = get_num_transfer_tokens(canvases[b * per_block][:, lo:hi] == mask_id, per_block)[0, i]
        assert changed.sum() == expected and not changed[:lo].any() and not changed[hi:].any()
    if cfg_scale > 0:  # the unconditional copy has the prompt masked, the rest equal
        assert all(c.shape[0] == 2 for c in calls)
        assert all((c[1, :7] == mask_id).all() and torch.equal(c[1, 7:], c[0, 7:]) for c in calls)


def test_llada_one_step_is_argmax_of_the_first_forward(llada):
    mask_id = llada.config["mask_token_id"]
    prompt = random_prompt(llada.config, 5, seed=5)
    out = llada_generate(llada, prompt, steps=1, gen_length=12, block_length=12, mask_id=mask_id)
    canvas = torch.cat([prompt, torch.full((1, 12), mask_id)], dim=1)
    assert torch.equal(out[:, 5:], llada(canvas).argmax(-1)[:, 5:])


def test_llada_sampling_depends_on_the_generator(llada):
    mask_id = llada.config["mask_token_id"]
    prompt = random_prompt(llada.config, 5, seed=6)
    outs = {tuple(llada_generate(llada, prompt, steps=8, gen_length=16, block_length=8, temperature=1.0,
                                 mask_id=mask_id, generator=torch.Generator().manual_seed(s))[0].tolist())
            for s in range(4)}
    assert len(outs) > 1


def test_llada_eos_options(llada, llada_dir):
    """With eos made the argmax at every third position, greedy decoding emits eos;
    logits_eos_inf removes it entirely; confidence_eos_eot_inf (temperature 0: eos and eot
    confidence 0) commits an eos only once nothing but eos/eot predictions is left to commit."""
    from transformers import AutoTokenizer

    cfg = config(llada_dir)
    eos, mask_id = cfg["eos_token_id"], cfg["mask_token_id"]
    eot = AutoTokenizer.from_pretrained(llada_dir).convert_tokens_to_ids("<|eot_id|>")

    def favour_eos(logits):
        logits = logits.clone()
        logits[:, ::3, eos] = logits[:, ::3].max(-1).values + 2.0
        return logits

    prompt = random_prompt(cfg, 6, seed=7)
    kw = dict(steps=8, gen_length=16, block_length=16, mask_id=mask_id, eos_id=eos, eot_id=eot)
    plain = llada_generate(Recorder(llada, favour_eos), prompt, **kw)[0, 6:]
    assert (plain == eos).any()
    no_eos = llada_generate(Recorder(llada, favour_eos), prompt, logits_eos_inf=True, **kw)[0, 6:]
    assert not (no_eos == eos).any() and not (no_eos == mask_id).any()
    rec = Recorder(llada, favour_eos)
    deferred = llada_generate(rec, prompt, confidence_eos_eot_inf=True, **kw)
    assert not (deferred == mask_id).any() and (deferred[0, 6:] == eos).any()
    assert not torch.equal(deferred[0, 6:], plain)
    canvases = rec.calls + [deferred]
    for before, after in zip(canvases[:-1], canvases[1:]):
        new = (before != after)[0]
        if (after[0, new] == eos).any():
            pred = favour_eos(llada(before)).argmax(-1)[0]
            still = after[0] == mask_id
            assert torch.isin(pred[still], torch.tensor([eos, eot])).all()


# ---------------------------------------------------------------- Dream generate


def test_sample_tokens():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 0.0, 5.0, 4.0]])
    probs = logits.softmax(-1)
    conf, x0 = sample_tokens(logits)
    assert x0.tolist() == [0, 2] and torch.allclose(conf, probs.max(-1).values)
    conf, _ = sample_tokens(logits, margin_confidence=True)
    top = probs.sort(-1, descending=True).values
    assert torch.allclose(conf, top[:, 0] - top[:, 1])
    conf, _ = sample_tokens(logits, neg_entropy=True)
    assert torch.allclose(conf, (probs * torch.log(probs + 1e-10)).sum(-1))
    # top_k = 1 / tiny top_p make sampling greedy; confidence is then 1.
    for kw in (dict(top_k=1), dict(top_p=0.01)):
        conf, x0 = sample_tokens(logits, temperature=1.0, generator=torch.Generator().manual_seed(0), **kw)
        assert x0.tolist() == [0, 2] and torch.allclose(conf, torch.ones(2))


DREAM_CASES = [  # (max_new_tokens, steps, alg, alg_temp, temperature, top_p, top_k)
    (16, 16, "maskgit_plus", 0.0, 0.0, None, None),
    (24, 8, "topk_margin", 0.0, 0.0, None, None),
    (16, 5, "entropy", 0.0, 0.0, None, None),
    (16, 8, "origin", 0.0, 0.0, None, None),
    (16, 8, "entropy", 0.5, 0.7, 0.95, None),
    (16, 6, "maskgit_plus", 0.0, 1.0, None, 20),
]


@pytest.mark.parametrize("case", DREAM_CASES, ids=str)
def test_dream_generate_invariants(dream, case):
    new, steps, alg, alg_temp, temperature, top_p, top_k = case
    mask_id = dream.config["mask_token_id"]
    prompt = random_prompt(dream.config, 9, seed=8)

    def run(seed):
        rec = Recorder(dream)
        out = dream_generate(rec, prompt, max_new_tokens=new, steps=steps, alg=alg, alg_temp=alg_temp,
                             temperature=temperature, top_p=top_p, top_k=top_k, mask_token_id=mask_id,
                             generator=torch.Generator().manual_seed(seed))
        return out, rec.calls

    out, calls = run(0)
    assert out.shape == (1, 9 + new) and torch.equal(out[:, :9], prompt)
    assert not (out == mask_id).any()
    assert len(calls) == steps and torch.equal(run(0)[0], out)
    if alg != "origin":  # each step commits int(masks * (1 - s/t)) masks, all on the last step
        t = torch.linspace(1, 1e-3, steps + 1)
        for i, (before, after) in enumerate(zip(calls, calls[1:] + [out])):
            masks = int((before == mask_id).sum())
            n = int(torch.tensor(float(masks)) * (1 - t[i + 1] / t[i])) if i < steps - 1 else masks
            assert int((before != after).sum()) == n
            assert torch.equal(before[before != mask_id], after[before != mask_id])


def test_dream_one_step_uses_shifted_logits(dream):
    mask_id = dream.config["mask_token_id"]
    prompt = random_prompt(dream.config, 6, seed=9)
    out = dream_generate(dream, prompt, max_new_tokens=10, steps=1, mask_token_id=mask_id)
    canvas = torch.cat([prompt, torch.full((1, 10), mask_id)], dim=1)
    # Position j takes the prediction made at position j - 1.
    assert torch.equal(out[:, 6:], dream(canvas).argmax(-1)[:, 5:-1])


def test_dream_sampling_depends_on_the_generator(dream):
    mask_id = dream.config["mask_token_id"]
    prompt = random_prompt(dream.config, 5, seed=10)
    outs = {tuple(dream_generate(dream, prompt, max_new_tokens=12, steps=6, temperature=1.0,
                                 mask_token_id=mask_id, generator=torch.Generator().manual_seed(s))[0].tolist())
            for s in range(4)}
    assert len(outs) > 1
    with pytest.raises(RuntimeError):
        dream_generate(dream, prompt, max_new_tokens=4, steps=2, alg="nope", mask_token_id=mask_id)


def test_math_sanity_of_rope_helper():
    """rope_complex (test helper) is the NeoX rotate_half rotation."""
    x = torch.randn(1, 2, 5, 8, generator=torch.Generator().manual_seed(0))
    half = 4
    inv = 1.0 / (10000.0 ** (torch.arange(0, 8, 2).float() / 8))
    ang = torch.arange(5).float()[:, None] * inv
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    rot = torch.cat([-x[..., half:], x[..., :half]], -1)
    torch.testing.assert_close(rope_complex(x, 10000.0), x * cos + rot * sin, atol=1e-5, rtol=1e-5)
    assert math.isclose(float(rope_complex(x, 10000.0)[..., 0, :].sub(x[..., 0, :]).abs().max()), 0.0,
                        abs_tol=1e-6)
