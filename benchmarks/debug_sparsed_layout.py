"""Repro helper: the sparsed impl's ops on engine-like tensor layouts (packed KV cache views, q sliced
from a fused qkv, output viewed from [T, H*D]) on the GPU, each variant synchronized and checked."""

import torch

from vllm_dlm.attention.impl import split_kv_cache, write_kv
from vllm_dlm.attention.ops.paged_attention import paged_attention
from vllm_dlm.attention.ops.reference import paged_attention_reference


def run(variant: str, T=300, H=32, Hkv=32, D=128, BS=16, NB=64):
    torch.manual_seed(0)
    kv = torch.zeros(NB, Hkv, BS, 2 * D, device="cuda", dtype=torch.bfloat16)
    k_cache, v_cache = split_kv_cache(kv, D)
    qkv = torch.randn(T, (H + 2 * Hkv) * D, device="cuda", dtype=torch.bfloat16)
    q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
    q, k, v = q.view(T, H, D), k.view(T, Hkv, D), v.view(T, Hkv, D)
    if variant == "contiguous_q":
        q = q.contiguous()
    slots = torch.randperm(NB * BS, device="cuda")[:T]
    bt_pages = torch.arange(NB, device="cuda", dtype=torch.int32)
    # one request, its slots are position order over pages 0..: build consistent table
    slots = torch.arange(T, device="cuda")
    write_kv(k, v, k_cache, v_cache, slots)
    torch.cuda.synchronize()
    out_buf = torch.empty(T, H * D, device="cuda", dtype=torch.bfloat16)
    out = out_buf.view(T, H, D)
    qsl = torch.tensor([0, T], device="cuda", dtype=torch.int32)
    sl = torch.tensor([T], device="cuda", dtype=torch.int32)
    bt = bt_pages[None]
    paged_attention(q, k_cache, v_cache, bt, qsl, sl, T, D**-0.5, False, out=out)
    torch.cuda.synchronize()
    ref = paged_attention_reference(q.cpu().float(), k_cache.cpu().float(), v_cache.cpu().float(),
                                    bt.cpu(), qsl.cpu(), sl.cpu(), D**-0.5)
    return (out.float().cpu() - ref).abs().max().item()


if __name__ == "__main__":
    import sys

    for variant in sys.argv[1:] or ["engine_like", "contiguous_q"]:
        try:
            print(variant, "max err", run(variant), flush=True)
        except Exception as e:  # noqa: BLE001
            print(variant, "FAILED", repr(e)[:300], flush=True)
