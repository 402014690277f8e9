"""Long-context quality through `LLM.generate`: held-out exact match of a model trained on the
synthetic RULER-style tasks (training/tasks.py, e.g. models/llada-ruler-tiny) per task x prompt
length x decoding variant, all variants at equal steps (default steps = block = gen_length, as
trained), greedy.

A variant is a name from VARIANTS (attention backend + extra_args), optionally with modifiers
after ":" (MODIFIERS), e.g. `none`, `dual`, `dual:thr0.9`, `sparsed`, `sparsed:sel0.1:bs64`,
`evict:keep0.25`. Variants are grouped by backend; one engine per backend, started one after the
other. A variant whose knobs the engine rejects (ValueError at admission) is skipped with its
message. Besides accuracy each row has `agree_none`: the fraction of items whose output equals the
`none` variant's (when `none` ran first). Prints a table, writes
benchmarks/results/quality_<tag>.json (after every row) and quality_<tag>.png. Example (GPU):
    python -m benchmarks.bench_quality --lengths 1024 4096 8192 --items 32 --tag h200
"""

import argparse
import gc
import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

VARIANTS = {  # name -> (attention_backend, extra_args); "none" first: the reference
    # all on the `sparsed` backend (one engine): select=1 keeps every block, i.e. dense attention,
    # token-identical to vLLM's default backend (tests/test_sparsed_engine.py)
    "none": ("sparsed", {"cache": "none", "select": 1.0}),
    "prefix": ("sparsed", {"cache": "prefix", "select": 1.0}),
    "dual": ("sparsed", {"cache": "dual", "select": 1.0}),
    "sparsed": ("sparsed", {"cache": "none", "skip": 0.2, "select": 0.3}),
    "sparsed-dual": ("sparsed", {"cache": "dual", "skip": 0.2, "select": 0.3}),
    "evict": ("sparsed", {"cache": "dual", "keep_ratio": 0.5, "select": 1.0}),
    "evict-page": ("sparsed", {"cache": "dual", "keep_ratio": 0.5, "select": 1.0, "evict_unit": "page"}),
    "evict-fast": ("sparsed", {"cache": "dual", "keep_ratio": 0.5, "select": 1.0, "evict_unit": "page",
                               "evict_pass": "cached"}),
    "evict-sparsed": ("sparsed", {"cache": "dual", "keep_ratio": 0.5, "skip": 0.2, "select": 0.3}),
    # vLLM's default attention backend (a second engine), dense
    "default-none": (None, {"cache": "none"}),
    "default-dual": (None, {"cache": "dual"}),
}
MODIFIERS = {  # prefix -> (knob, type)
    "thr": ("threshold", float), "skip": ("skip", float), "sel": ("select", float),
    "bs": ("block_size", int), "keep": ("keep_ratio", float),
}


def parse_variant(text: str) -> tuple[str | None, dict]:
    """`name[:mod...]` -> (attention_backend, extra_args)."""
    name, *mods = text.split(":")
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; known: {sorted(VARIANTS)}")
    backend, extra = VARIANTS[name]
    extra = dict(extra)
    for mod in mods:
        prefix = next((p for p in sorted(MODIFIERS, key=len, reverse=True) if mod.startswith(p)), None)
        if prefix is None:
            raise SystemExit(f"unknown modifier {mod!r} in {text!r}; known prefixes: {sorted(MODIFIERS)}")
        knob, kind = MODIFIERS[prefix]
        extra[knob] = kind(mod[len(prefix):])
    return backend, extra


def save(args, rows, skipped) -> Path:
    out = Path(args.out) / f"quality_{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "skipped": skipped}, indent=1))
    return out


def start_engine(args, backend):
    from vllm import LLM

    return LLM(model=args.model, attention_backend=backend, dtype=args.dtype,
               max_model_len=max(args.lengths) + args.gen + 64, max_num_seqs=args.max_num_seqs,
               enforce_eager=not args.compile, gpu_memory_utilization=args.gpu_memory_utilization,
               seed=0)


def stop_engine(llm) -> None:
    """Shut the engine down so the next one gets the memory."""
    import torch

    core = getattr(llm.llm_engine, "engine_core", None)
    if hasattr(core, "shutdown"):
        core.shutdown()
    del llm
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(args) -> tuple[list, dict]:
    from vllm import SamplingParams

    from training.tasks import TaskGenerator, exact_match

    gen = TaskGenerator()
    items = {(t, n): gen.test_items(t, n, args.items) for t in args.tasks for n in args.lengths}
    steps = args.steps or args.gen
    block = args.block or args.gen
    by_backend = {}
    for v in args.variants:
        by_backend.setdefault(parse_variant(v)[0], []).append(v)
    rows, skipped, outputs = [], {}, {}
    for backend, variants in by_backend.items():
        llm = start_engine(args, backend)
        for variant in variants:
            extra = parse_variant(variant)[1]
            params = SamplingParams(max_tokens=args.gen, temperature=0.0, ignore_eos=True,
                                    extra_args={"steps": steps, "block_length": block, **extra})
            for length in args.lengths:
                batch = [it for t in args.tasks for it in items[(t, length)]]
                start = time.perf_counter()
                try:
                    outs = llm.generate([{"prompt_token_ids": it.prompt} for it in batch], params,
                                        use_tqdm=False)
                except ValueError as err:
                    skipped[variant] = str(err)
                    print(f"skip variant {variant!r}: the engine rejects {extra}: {err}", flush=True)
                    break
                seconds = time.perf_counter() - start
                for it, out in zip(batch, outs):
                    outputs.setdefault((variant, it.task, length), []).append(list(out.outputs[0].token_ids))
                for task in args.tasks:
                    got = outputs[(variant, task, length)]
                    hits = [exact_match(o, it.answer, gen.stop_ids)
                            for o, it in zip(got, items[(task, length)])]
                    ref = outputs.get(("none", task, length))
                    row = {
                        "task": task, "length": length, "variant": variant,
                        "attention_backend": backend or "default", "extra_args": extra,
                        "accuracy": sum(hits) / len(hits), "items": len(hits),
                        "agree_none": (sum(a == b for a, b in zip(got, ref)) / len(got)) if ref else None,
                        "seconds_all_tasks": seconds, "gen": args.gen, "steps": steps, "block": block,
                    }
                    rows.append(row)
                save(args, rows, skipped)
                print(f"{variant:16s} len={length:6d} " + " ".join(
                    f"{r['task']}={r['accuracy']:.2f}" for r in rows[-len(args.tasks):])
                    + f"  ({seconds:.1f} s)", flush=True)
        stop_engine(llm)
    return rows, skipped


def print_table(rows, args) -> None:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    print(f"\n{'task':14s} {'length':>6s} " + " ".join(f"{v:>14s}" for v in variants))
    for task in args.tasks:
        for length in args.lengths:
            cells = []
            for v in variants:
                r = next((r for r in rows if (r["task"], r["length"], r["variant"]) == (task, length, v)),
                         None)
                cells.append(f"{r['accuracy']:14.2f}" if r else f"{'-':>14s}")
            print(f"{task:14s} {length:6d} " + " ".join(cells))


def plot(rows, args) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.tasks), figsize=(3.2 * len(args.tasks), 3.2), sharey=True,
                             squeeze=False)
    for ax, task in zip(axes[0], args.tasks):
        for v in dict.fromkeys(r["variant"] for r in rows):
            pts = sorted((r["length"], r["accuracy"]) for r in rows
                         if r["task"] == task and r["variant"] == v)
            ax.plot(*zip(*pts), marker="o", label=v)
        ax.set_xscale("log", base=2)
        ax.set_xticks(args.lengths, [str(n) for n in args.lengths])
        ax.set_title(task)
        ax.set_xlabel("prompt tokens")
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].set_ylabel(f"exact match ({args.items} items)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{Path(args.model).name}: held-out exact match, steps={args.steps or args.gen}")
    fig.tight_layout()
    out = Path(args.out) / f"quality_{args.tag}.png"
    fig.savefig(out, dpi=120)
    return out


def main() -> None:
    from training.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(Path(__file__).parents[1] / "models" / "llada-ruler-tiny"))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--items", type=int, default=32, help="held-out items per task and length")
    parser.add_argument("--variants", nargs="+", default=["none", "prefix", "dual", "dual:thr0.9", "evict", "sparsed"],
                        help="with one block (the default, as trained) SparseD masks never apply under "
                             "a cache, so sparsed-dual / evict-sparsed need --block < --gen")
    parser.add_argument("--gen", type=int, default=16, help="max_tokens (the trained answer region)")
    parser.add_argument("--steps", type=int, default=None, help="default: gen")
    parser.add_argument("--block", type=int, default=None, help="block_length; default: gen")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    for v in args.variants:
        parse_variant(v)  # fail before starting an engine
    rows, skipped = run(args)
    print_table(rows, args)
    for v, msg in skipped.items():
        print(f"skipped {v}: {msg}")
    print(f"wrote {save(args, rows, skipped)} and {plot(rows, args) if rows else 'no plot'}")


if __name__ == "__main__":
    main()
