"""The `sparsed` paged attention kernel (dense, bidirectional) against FlashAttention-3 (vLLM's
`flash_attn_varlen_func`, dense varlen, non-causal), one LLaDA-8B layer (32 heads, head_dim 128,
bf16), and a correctness check of the kernel against its torch reference on the GPU.
Writes benchmarks/results/attention_kernel_<tag>.json."""

import argparse
import json
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def time_ms(fn, iters=5) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    from vllm_dlm.attention.ops.paged_attention import paged_attention
    from vllm_dlm.attention.ops.reference import paged_attention_reference, random_paged_batch

    checks = []
    for dtype, tol in ((torch.float32, 2e-4), (torch.bfloat16, 2e-2)):
        q, kc, vc, bt, qsl, sl = random_paged_batch([37, 5, 128], [137, 8, 128], 8, 2, 128, 16, dtype, "cuda")
        out = paged_attention(q, kc, vc, bt, qsl, sl, 128, 128**-0.5)
        ref = paged_attention_reference(q.cpu(), kc.cpu(), vc.cpu(), bt.cpu(), qsl.cpu(), sl.cpu(), 128**-0.5)
        err = (out.float().cpu() - ref.float()).abs().max().item()
        checks.append({"dtype": str(dtype), "max_abs_err": err, "ok": err < tol})
        print(f"correctness {dtype}: max abs err {err:.2e} ({'ok' if err < tol else 'FAIL'})", flush=True)

    from vllm.vllm_flash_attn import flash_attn_varlen_func

    heads, dim, page = 32, 128, 16
    rows = []
    for n in args.seq:
        q = torch.randn(n, heads, dim, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(n, heads, dim, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(n, heads, dim, device="cuda", dtype=torch.bfloat16)
        cu = torch.tensor([0, n], device="cuda", dtype=torch.int32)
        fa = time_ms(lambda: flash_attn_varlen_func(q, k, v, max_seqlen_q=n, cu_seqlens_q=cu,
                                                    max_seqlen_k=n, cu_seqlens_k=cu,
                                                    softmax_scale=dim**-0.5, causal=False, fa_version=3))
        pages = n // page
        kc = k.view(pages, page, heads, dim)
        vc = v.view(pages, page, heads, dim)
        bt = torch.arange(pages, device="cuda", dtype=torch.int32)[None]
        seq_lens = torch.tensor([n], device="cuda", dtype=torch.int32)
        ours = time_ms(lambda: paged_attention(q, kc, vc, bt, cu, seq_lens, n, dim**-0.5))
        flops = 4 * n * n * heads * dim
        rows.append({"seq": n, "fa3_ms": fa, "sparsed_dense_ms": ours, "ratio": ours / fa,
                     "fa3_tflops": flops / fa / 1e9, "sparsed_tflops": flops / ours / 1e9})
        print(f"seq {n:6d}: FA3 {fa:8.2f} ms ({flops / fa / 1e9:5.0f} TFLOP/s)  sparsed dense "
              f"{ours:8.2f} ms ({flops / ours / 1e9:5.0f} TFLOP/s)  ratio {ours / fa:.2f}", flush=True)
    out = Path(args.out) / f"attention_kernel_{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "checks": checks, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
