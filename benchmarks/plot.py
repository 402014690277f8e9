"""PNG plots from the JSON records in benchmarks/results/ (run anywhere with matplotlib)."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def plot_cache_modes() -> None:
    rows = json.loads((RESULTS / "e2e_cache_modes_batch1.json").read_text())["rows"]
    prompts = sorted({r["prompt_len"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        ys = [next(r["tokens_per_s"] for r in rows if r["variant"] == v and r["prompt_len"] == p) for p in prompts]
        ax.bar([x + i * width for x in range(len(prompts))], ys, width, label=v)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(prompts))], [f"prompt {p}" for p in prompts])
    ax.set_ylabel("tokens/s (batch 1, gen 256, 256 steps)")
    ax.set_title("LLaDA-8B shape, H100, eager: cache modes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "e2e_cache_modes_batch1.png", dpi=120)


def plot_batching(name: str = "e2e_batching_compiled", device: str = "H100") -> None:
    data = _load(f"{name}.json")
    if data is None:
        return
    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for v in dict.fromkeys(r["variant"] for r in rows):
        pts = sorted((r["batch"], r["tokens_per_s"]) for r in rows if r["variant"] == v)
        ax.plot(*zip(*pts), marker="o", label=v)
    ax.axhline(1500, ls="--", c="gray", label="issue target (batch 64)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("tokens/s (prompt 1k, gen 256, 1 token/step)")
    ax.set_title(f"LLaDA-8B shape, {device}, piecewise CUDA graphs: continuous batching")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=120)


def plot_sampler_sync_ab() -> None:
    """ab_sync_h200.json: host-side block end vs a device sync per request and step."""
    rows = _load("ab_sync_h200.json")
    if rows is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    for i, impl in enumerate(impls):
        for j, batch in enumerate(batches):
            ys = [r["tokens_per_s"] for r in rows if r["impl"] == impl and r["batch"] == batch]
            ax.scatter([j + 0.15 * (2 * i - 1)] * len(ys), ys, label=impl if j == 0 else None,
                       color=f"C{i}")
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("tokens/s (dual, prompt 1k, gen 256)")
    ax.set_title("block end on the host vs a sync per request\nH200, 3 alternating runs", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "ab_sync_h200.png", dpi=120)


def plot_sparsed_batching() -> None:
    """SparseD + dual on the `sparsed` backend: FA3 virtual sequences rebuilt per layer (before) vs
    once per step (two runs: without and with the whole-request warm-up), and SparseD off."""
    runs = [("e2e_batching_h200_sparsed.json", "before: tables per layer", ":"),
            ("e2e_batching_h200_sparsed_step.json", "run A (batch 1 incl. a JIT compile)", "--"),
            ("e2e_batching_h200_sparsed_warm.json", "run B (warmed up)", "-"),
            ("e2e_batching_h200_sparsed_multiproc.json", "run C", "-."),
            ("e2e_batching_h200_sparsed_inproc.json", "run C, engine core in-process", (0, (1, 1))),
            ("e2e_batching_h200_sparsed_batched_step.json", "run D, batched denoising step", (0, (5, 1)))]
    fig, ax = plt.subplots(figsize=(12, 4.8))
    for name, label, style in runs:
        data = _load(name)
        if data is None:
            continue
        for variant, color in (("dual", "C0"), ("dual:skip=1", "C1")):
            pts = sorted((r["batch"], r["tokens_per_s"]) for r in data["rows"] if r["variant"] == variant)
            if pts:
                what = "SparseD + dual" if variant == "dual" else "SparseD off (skip 1), dual"
                ax.plot(*zip(*pts), linestyle=style, marker="o", color=color, label=f"{what}: {label}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("tokens/s (prompt 1k, gen 256, 1 token/step)")
    ax.set_title("sparsed backend, LLaDA-8B shape, H200, piecewise CUDA graphs\n"
                 "runs A-D: FA3 virtual sequences built once per step; D: batched denoising step", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    fig.savefig(RESULTS / "e2e_batching_h200_sparsed_step.png", dpi=120)


def plot_batched_step() -> None:
    """dual, default backend: the per-request sampler (e2e_batching_h200.json, an earlier machine
    start) vs the batched denoising step (e2e_batching_h200_batched_step.json)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in (("e2e_batching_h200.json", "per-request sampler (earlier machine start)"),
                        ("e2e_batching_h200_batched_step.json", "batched denoising step")):
        data = _load(name)
        if data is None:
            continue
        pts = sorted((r["batch"], r["tokens_per_s"]) for r in data["rows"] if r["variant"] == "dual")
        ax.plot(*zip(*pts), marker="o", label=label)
    ax.axhline(1500, ls="--", c="gray", label="issue target (batch 64)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("tokens/s (prompt 1k, gen 256, 1 token/step)")
    ax.set_title("LLaDA-8B shape, H200, dual, piecewise CUDA graphs", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "e2e_batching_h200_batched_step.png", dpi=120)


def plot_kv_budget(name: str = "kv_budget_h200") -> None:
    """<name>.json: most / mean requests running under a fixed KV pool and tokens/s per variant
    (and stagger); with per-step counts, also the requests running at each step."""
    data = _load(f"{name}.json")
    if data is None:
        return
    rows = data["rows"]
    per_step = all("running_per_step" in r for r in rows)
    fig, axes = plt.subplots(1, 3 if per_step else 2, figsize=(13 if per_step else 9, 3.8))
    labels = [r["variant"] + (f"\nstagger {r['stagger']}" if "stagger" in r else "") for r in rows]
    axes[0].bar(labels, [r["max_running"] for r in rows], color="C0", label="most")
    if "mean_running" in rows[0]:
        axes[0].bar(labels, [r["mean_running"] for r in rows], color="C2", width=0.4, label="mean over steps")
        axes[0].legend(fontsize=7)
    axes[0].set_ylabel("requests running at once")
    axes[1].bar(labels, [r["tokens_per_s"] for r in rows], color="C1")
    axes[1].set_ylabel("tokens/s")
    if per_step:
        for i, (label, r) in enumerate(zip(labels, rows)):
            axes[2].plot(r["running_per_step"], color=f"C{i}", label=label.replace("\n", ", "), lw=1)
        axes[2].set_xlabel("engine step")
        axes[2].set_ylabel("requests running")
        axes[2].legend(fontsize=6)
    for ax in axes[:2]:
        ax.tick_params(axis="x", labelsize=6)
    a = data["args"]
    fig.suptitle(f"fixed KV pool of {data['kv_pages']} pages ({a['budget_requests']} requests of "
                 f"{a['prompt_len']}+{a['gen']} tokens), {a['requests']} requests, H200", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=120)


def plot_block_steps(tag: str) -> None:
    """block_steps_<tag>.json: per block, the refresh pass and the median cached step."""
    data = _load(f"block_steps_{tag}.json")
    if data is None:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (name, row) in enumerate(data.items()):
        first, cached = zip(*row["blocks_first_and_median_cached_ms"])
        blocks = range(1, len(first) + 1)
        ax1.plot(blocks, first, marker="o", color=f"C{i}", label=name)
        ax2.plot(blocks, cached, marker="o", color=f"C{i}", label=name)
    ax1.set_yscale("log")
    ax1.set_ylabel("first step of the block, ms")
    ax1.set_title("refresh pass (block 3: SparseD switch step)", fontsize=9)
    ax2.set_ylabel("median cached step, ms")
    ax2.set_title("cached steps (SparseD masks from block 3 on)", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_xlabel("block (32 tokens)")
        ax.legend(fontsize=8)
    fig.suptitle(f"dual cache, prompt 1k, gen 256, one request at a time, sparsed backend ({tag})", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / f"block_steps_{tag}.png", dpi=120)


def _load(name: str):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def plot_attention_kernel(tag: str) -> None:
    data = _load(f"attention_kernel_{tag}.json")
    if data is None:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    rows = data["full"]
    seqs = [r["seq"] for r in rows]
    for key, label in (("fa3_ms", "FA3 dense"), ("dense_ms", "sparsed kernel, dense"),
                       ("sparse_ms", "sparsed Triton kernel, SparseD lists"),
                       ("fa3_virtual_ms", "SparseD on FA3 virtual sequences (used)")):
        if all(key in r for r in rows):
            ax1.plot(seqs, [r[key] for r in rows], marker="o", label=label)
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("sequence length (full-sequence step)")
    ax1.set_ylabel("ms per layer (32 heads x 128)")
    ax1.set_title("full step, one layer")
    ax1.legend()
    cached = data["cached"]
    ctx = sorted({r["context"] for r in cached})
    ax2.plot(ctx, [next(r["fa3_ms"] for r in cached if r["context"] == c) for c in ctx], marker="o", label="FA3")
    for keep in sorted({r["keep"] for r in cached}, reverse=True):
        ax2.plot(ctx, [next(r["ours_ms"] for r in cached if r["context"] == c and r["keep"] == keep) for c in ctx],
                 marker="o", label=f"sparsed, keep {keep}")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("cached context")
    ax2.set_ylabel("ms per layer (32 queries)")
    ax2.set_title("dual-cache step, one layer")
    ax2.legend()
    fig.suptitle(f"LLaDA-8B layer on {data['device']}")
    fig.tight_layout()
    fig.savefig(RESULTS / f"attention_kernel_{tag}.png", dpi=120)


def plot_sparsed_step(tag: str) -> None:
    data = _load(f"sparsed_step_{tag}.json")
    if data is None or "summary" not in data:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for backend, style in (("sparsed", "-"), ("sparsed:triton", ":")):
        rows = [r for r in data["summary"] if r.get("backend", "sparsed") == backend]
        if not rows:
            continue
        name = "FA3 virtual seqs" if backend == "sparsed" else "Triton kernel"
        xs = [r["prompt_len"] for r in rows]
        ax.plot(xs, [r["sparse_step_speedup"] for r in rows], style, marker="o", label=f"{name}: sparse step")
        ax.plot(xs, [r["request_speedup_128_steps"] for r in rows], style, marker="s",
                label=f"{name}: request, 128 steps")
        ax.plot(xs, [r["request_speedup_1024_steps"] for r in rows], style, marker="^",
                label=f"{name}: request, 1024 steps")
    ax.axhline(1.8, ls="--", c="gray", label="issue target at 64k")
    ax.axhline(1.0, ls=":", c="k")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prompt length")
    ax.set_ylabel("speedup over vLLM FA3 (cache none)")
    ax.set_title("SparseD (skip 0.2, select 0.3, block 128) vs FA3, LLaDA-8B shape, H200")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"sparsed_step_{tag}.png", dpi=120)


def plot_eviction(tag: str) -> None:
    data = _load(f"eviction_{tag}.json")
    if data is None:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 2]})
    cached = data["cached"]
    ax1.bar([r["variant"] for r in cached], [r["cached_step_ms"] for r in cached])
    ax1.set_ylabel(f"ms per dual-cache step, {cached[0]['context'] // 1024}k context")
    ax1.set_title("cached step (kept tokens vs all)")
    ax1.tick_params(axis="x", labelsize=7, labelrotation=20)
    rows = data["e2e"]
    prompts = sorted({r["prompt_len"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        ys = [next(r.get("tokens_per_s_at_steps", r["tokens_per_s"]) for r in rows
                   if r["variant"] == v and r["prompt_len"] == p) for p in prompts]
        ax2.bar([x + i * width for x in range(len(prompts))], ys, width, label=v)
    ax2.set_xticks([x + 0.4 - width / 2 for x in range(len(prompts))], [f"prompt {p}" for p in prompts])
    ax2.set_yscale("log")
    ax2.set_ylabel("tokens/s (batch 1, gen 256, 1 token/step)")
    ax2.set_title("end to end")
    ax2.legend(fontsize=8)
    fig.suptitle(f"Sparse-dLLM eviction on paged KV, LLaDA-8B shape ({tag})")
    fig.tight_layout()
    fig.savefig(RESULTS / f"eviction_{tag}.png", dpi=120)


if __name__ == "__main__":
    import sys

    tag = sys.argv[1] if len(sys.argv) > 1 else "h200"
    plot_cache_modes()
    plot_batching()
    plot_batching("e2e_batching_h200", "H200")
    plot_sampler_sync_ab()
    plot_sparsed_batching()
    plot_batched_step()
    plot_kv_budget()
    plot_kv_budget(f"kv_budget_{tag}_pages")
    plot_eviction(f"{tag}_return")
    plot_eviction(f"{tag}_return_ab")
    plot_block_steps(tag)
    plot_eviction(f"{tag}_pages")
    plot_eviction(f"{tag}_before_8k")
    plot_attention_kernel(tag)
    plot_sparsed_step(tag)
    plot_eviction(tag)
    plot_eviction(f"{tag}_eager")
    plot_eviction(f"{tag}_compiled")
    print("plots written to", RESULTS)
