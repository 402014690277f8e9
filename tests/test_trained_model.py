"""The bundled trained model (models/llada-ruler-tiny, made by training/train_llada.py) through the
plugin on CPU: greedy decoding (cache `none`, as trained: max_tokens = steps = block_length = 16)
answers held-out short-context items of the synthetic tasks exactly, and equals the plain-torch
LLaDA generate token for token. One engine, six prompts, about a minute on 2 cores.
TRAINED_LLADA=DIR points the test at another checkpoint."""

import os
from pathlib import Path

import pytest
import torch
from vllm import LLM, SamplingParams

from tests.conftest import ENGINE_KWARGS
from tests.reference.llada import LLaDAReference, llada_generate
from training.tasks import TaskGenerator, exact_match

MODEL = Path(os.environ.get("TRAINED_LLADA",
                           Path(__file__).resolve().parents[1] / "models" / "llada-ruler-tiny"))
GEN = 16
CASES = [  # (task, prompt length, held-out index)
    ("niah_single", 192, 0), ("niah_single", 320, 1),
    ("copy", 224, 0), ("copy", 288, 1),
    ("niah_multikey", 256, 0), ("niah_multikey", 192, 1),
]

pytestmark = pytest.mark.skipif(
    not (MODEL / "model.safetensors").exists(),
    reason=f"no trained checkpoint at {MODEL} (python -m training.train_llada --out {MODEL})")


@pytest.fixture(scope="module")
def setup():
    llm = LLM(model=str(MODEL), **ENGINE_KWARGS)
    gen = TaskGenerator()
    items = [gen.test_items(task, length, 1, start=i)[0] for task, length, i in CASES]
    params = SamplingParams(max_tokens=GEN, temperature=0.0, ignore_eos=True,
                            extra_args={"steps": GEN, "block_length": GEN, "cache": "none"})
    outs = llm.generate([{"prompt_token_ids": it.prompt} for it in items], params, use_tqdm=False)
    yield llm, gen, items, [list(o.outputs[0].token_ids) for o in outs]
    del llm


def test_trained_model_answers_held_out_items_exactly(setup):
    _, gen, items, outs = setup
    wrong = [(it.task, it.length, gen.tok.decode(it.answer), gen.tok.decode(out))
             for it, out in zip(items, outs) if not exact_match(out, it.answer, gen.stop_ids)]
    assert not wrong, f"(task, length, answer, output): {wrong}"


def test_engine_equals_plain_torch_generate_on_the_trained_model(setup):
    llm, _, items, outs = setup
    ref = LLaDAReference.from_pretrained(MODEL).eval()
    mask_id = llm.llm_engine.model_config.hf_config.mask_token_id
    for it, out in list(zip(items, outs))[::3]:
        expected = llada_generate(ref, torch.tensor([it.prompt]), steps=GEN, gen_length=GEN,
                                  block_length=GEN, mask_id=mask_id)[0, it.length:].tolist()
        assert out == expected, it.task
