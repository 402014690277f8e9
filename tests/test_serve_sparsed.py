"""`vllm serve --attention-backend sparsed` with the OpenAI client: SparseD (and eviction) knobs in
`extra_body`, streamed output equal to the plain-torch SparseD reference, and HTTP 400 naming a bad
sparsity knob while the server keeps serving."""

import openai
import pytest
import torch

from tests.reference.llada import LLaDAReference, llada_generate
from tests.reference.sparsed import SparseDModel
from tests.test_serve import _serve

KNOBS = {"steps": 16, "block_length": 16, "skip": 0.2, "select": 0.3, "block_size": 16}


@pytest.fixture(scope="module")
def server(tiny_llada, tmp_path_factory):
    yield from _serve(tiny_llada, "tiny-llada", tmp_path_factory.mktemp("serve-sparsed"),
                      extra_args=["--attention-backend", "sparsed"])


def test_streamed_sparsed_completion_matches_the_reference(server, tiny_llada):
    client, _ = server
    prompt = "The quick brown fox jumps over the lazy dog. " * 8
    full = client.completions.create(model="tiny-llada", prompt=prompt, max_tokens=32, temperature=0.0,
                                     extra_body={**KNOBS, "ignore_eos": True, "return_token_ids": True})
    choice = full.choices[0]
    ref = LLaDAReference.from_pretrained(tiny_llada).eval()
    model = SparseDModel(ref, steps=16, prompt_len=len(choice.prompt_token_ids), skip=0.2, select=0.3,
                         block_size=16)
    with torch.no_grad():
        expected = llada_generate(model, torch.tensor([choice.prompt_token_ids]), steps=16, gen_length=32,
                                  block_length=16, mask_id=ref.config["mask_token_id"])
    assert model.masks, "the prompt is too short for SparseD to drop anything"
    assert list(choice.token_ids) == expected[0, len(choice.prompt_token_ids):].tolist()
    stream = client.completions.create(model="tiny-llada", prompt=prompt, max_tokens=32, temperature=0.0,
                                       stream=True, extra_body={**KNOBS, "ignore_eos": True})
    assert "".join(c.choices[0].text for c in stream) == choice.text


@pytest.mark.parametrize("extra, named", [({"select": 0.0}, "select"), ({"keep_ratio": 0.5}, "keep_ratio"),
                                          ({"cache": "dual", "kernel_size": 4, "keep_ratio": 0.5}, "kernel_size")])
def test_bad_sparsity_knob_is_http_400_naming_it(server, extra, named):
    client, proc = server
    with pytest.raises(openai.BadRequestError, match=named):
        client.completions.create(model="tiny-llada", prompt="hi", max_tokens=16, extra_body=extra)
    ok = client.completions.create(model="tiny-llada", prompt="hi", max_tokens=16, temperature=0.0,
                                   extra_body={"cache": "dual", "keep_ratio": 0.5, "ignore_eos": True})
    assert len(ok.choices[0].text) > 0 and proc.poll() is None
