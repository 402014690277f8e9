"""`LLM.generate` through the plugin equals the official generate algorithms token for token
(fp32, greedy, cache `none`), for a batch of mixed prompt lengths and decoding parameters."""

import pytest
import torch
from vllm import LLM, SamplingParams

from tests.conftest import ENGINE_KWARGS
from tests.reference.dream import DreamReference, dream_generate
from tests.reference.llada import LLaDAReference, llada_generate


def prompts(vocab_size: int, lengths, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    # Stay clear of the special tokens at the top of the vocabulary.
    return [torch.randint(10, vocab_size - 20, (n,), generator=g).tolist() for n in lengths]


@pytest.fixture(scope="module")
def llada(tiny_llada):
    llm = LLM(model=tiny_llada, **ENGINE_KWARGS)
    yield llm, LLaDAReference.from_pretrained(tiny_llada).eval()
    del llm


@pytest.fixture(scope="module")
def dream(tiny_dream):
    llm = LLM(model=tiny_dream, **ENGINE_KWARGS)
    yield llm, DreamReference.from_pretrained(tiny_dream).eval()
    del llm


LLADA_CASES = [  # (max_tokens, steps, block_length, remasking)
    (16, 16, 8, "low_confidence"),
    (24, 12, 8, "low_confidence"),
    (16, 4, 16, "low_confidence"),
    (32, 32, 32, "low_confidence"),
]


def test_llada_batch_matches_reference(llada):
    llm, ref = llada
    hf = llm.llm_engine.model_config.hf_config
    token_prompts = prompts(hf.vocab_size, [5, 17, 3, 40], seed=0)
    params = [
        SamplingParams(
            max_tokens=g, temperature=0.0, ignore_eos=True,
            extra_args={"steps": s, "block_length": b, "remasking": r},
        )
        for g, s, b, r in LLADA_CASES
    ]
    outs = llm.generate([{"prompt_token_ids": p} for p in token_prompts], params, use_tqdm=False)
    for prompt, (g, s, b, r), out in zip(token_prompts, LLADA_CASES, outs):
        with torch.no_grad():
            expected = llada_generate(
                ref, torch.tensor([prompt]), steps=s, gen_length=g, block_length=b,
                remasking=r, mask_id=hf.mask_token_id,
            )[0, len(prompt):].tolist()
        assert list(out.outputs[0].token_ids) == expected, (g, s, b, r)


def test_llada_stops_at_eos_like_decoding_the_reference(llada):
    """Without ignore_eos the output is the reference's generation up to its first EOS."""
    llm, ref = llada
    hf = llm.llm_engine.model_config.hf_config
    eos = llm.llm_engine.model_config.hf_config.eos_token_id
    prompt = prompts(hf.vocab_size, [9], seed=3)[0]
    out = llm.generate(
        [{"prompt_token_ids": prompt}],
        SamplingParams(max_tokens=32, temperature=0.0, extra_args={"steps": 16, "block_length": 8}),
        use_tqdm=False,
    )[0].outputs[0].token_ids
    with torch.no_grad():
        full = llada_generate(
            ref, torch.tensor([prompt]), steps=16, gen_length=32, block_length=8,
            mask_id=hf.mask_token_id,
        )[0, len(prompt):].tolist()
    expected = full[: full.index(eos) + 1] if eos in full else full
    assert list(out) == expected


DREAM_CASES = [  # (max_tokens, steps, remasking)
    (16, 16, "maskgit_plus"),
    (24, 8, "topk_margin"),
    (16, 5, "entropy"),
]


def test_dream_batch_matches_reference(dream):
    llm, ref = dream
    hf = llm.llm_engine.model_config.hf_config
    token_prompts = prompts(hf.vocab_size, [6, 21, 2], seed=1)
    params = [
        SamplingParams(max_tokens=g, temperature=0.0, ignore_eos=True,
                       extra_args={"steps": s, "remasking": r})
        for g, s, r in DREAM_CASES
    ]
    outs = llm.generate([{"prompt_token_ids": p} for p in token_prompts], params, use_tqdm=False)
    for prompt, (g, s, r), out in zip(token_prompts, DREAM_CASES, outs):
        with torch.no_grad():
            expected = dream_generate(
                ref, torch.tensor([prompt]), max_new_tokens=g, steps=s, alg=r,
                mask_token_id=hf.mask_token_id,
            )[0, len(prompt):].tolist()
        assert list(out.outputs[0].token_ids) == expected, (g, s, r)


def test_seeded_sampling_reproduces_and_differs_across_seeds(llada):
    llm, _ = llada
    prompt = {"prompt_token_ids": [11, 12, 13, 14]}

    def sample(seed):
        sp = SamplingParams(max_tokens=16, temperature=1.0, seed=seed, ignore_eos=True,
                            extra_args={"steps": 8, "block_length": 8, "remasking": "random"})
        return list(llm.generate([prompt], sp, use_tqdm=False)[0].outputs[0].token_ids)

    first = sample(1)
    assert sample(1) == first
    assert any(sample(s) != first for s in (2, 3, 4))


def test_greedy_output_does_not_depend_on_batch_company(llada):
    llm, _ = llada
    target = {"prompt_token_ids": [21, 22, 23, 24, 25]}
    sp = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True,
                        extra_args={"steps": 8, "block_length": 8})
    alone = llm.generate([target], sp, use_tqdm=False)[0].outputs[0].token_ids
    others = [{"prompt_token_ids": list(range(30, 30 + n))} for n in (3, 50, 11)]
    crowd = llm.generate([*others, target], sp, use_tqdm=False)[-1].outputs[0].token_ids
    assert list(crowd) == list(alone)
