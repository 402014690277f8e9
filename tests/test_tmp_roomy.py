import torch
from tests.reference.llada import LLaDAReference
from tests.reference.sparse_dllm import sparse_dllm_generate
from tests.test_parity_llm import prompts
from tests.test_page_return import _params, PAGE, GEN, BLOCK, STEPS


def test_roomy(sparsed_llm, tiny_llada):
    token_prompts = prompts(380, [40, 35, 44, 38, 42], seed=51)
    outs = sparsed_llm.generate([{"prompt_token_ids": p} for p in token_prompts], _params(), use_tqdm=False)
    ref = LLaDAReference.from_pretrained(tiny_llada).eval()
    bad = []
    for prompt, o in zip(token_prompts, outs):
        e = sparse_dllm_generate(ref, torch.tensor([prompt]), steps=STEPS, gen_length=GEN, block_length=BLOCK,
                                 mask_id=ref.config["mask_token_id"], kernel_size=3, evict_delay=1, page_size=PAGE,
                                 keep_ratio=0.5, evict_pass="cached")[0, len(prompt):].tolist()
        bad.append(list(o.outputs[0].token_ids) == e)
    print("ROOMY", bad)
    assert all(bad)
