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


def plot_batching() -> None:
    rows = json.loads((RESULTS / "e2e_batching_compiled.json").read_text())["rows"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for v in dict.fromkeys(r["variant"] for r in rows):
        pts = sorted((r["batch"], r["tokens_per_s"]) for r in rows if r["variant"] == v)
        ax.plot(*zip(*pts), marker="o", label=v)
    ax.axhline(1500, ls="--", c="gray", label="issue target (batch 64)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("tokens/s (prompt 1k, gen 256, 1 token/step)")
    ax.set_title("LLaDA-8B shape, H100, piecewise CUDA graphs: continuous batching")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "e2e_batching_compiled.png", dpi=120)


if __name__ == "__main__":
    plot_cache_modes()
    plot_batching()
    print("plots written to", RESULTS)
