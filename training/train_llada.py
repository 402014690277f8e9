"""Train a small LLaDA on the synthetic long-context tasks (training/tasks.py) and save it in the
official LLaDA checkpoint layout, loadable by vLLM through the plugin like LLaDA-8B.

Objective (LLaDA's masked diffusion): per sequence t ~ U(0, 1), p = (1 - eps) t + eps; each token
of the sequence's maskable region is replaced by <|mdm_mask|> with probability p; loss = sum over
masked positions of CE / p, divided by the region's length, averaged over the batch. The region
is, for a fraction --pretrain-frac of the rows, the whole sequence but bos (LLaDA pre-training:
it makes the model reconstruct needles and keys from their other occurrence, many more retrieval
signals per sequence than the answer alone), and for the other rows the answer region (LLaDA
SFT: answer + EOS padding, `gen_length` tokens, the prompt never masked). A fraction --repeat-frac
of the rows are induction rows instead of task items (a random segment written twice, masked
anywhere): the copy circuits retrieval needs form far sooner on them than on answers alone.

Batches hold one prompt length each (items are generated at exact lengths: no padding), tasks
mixed; batch size = --tokens-per-step // (length + gen_length), lengths log-uniform in
[--min-len, top], multiples of 64. Curriculum gated by held-out accuracy: top starts at
2 * --min-len and doubles whenever the mean exact match at top (evaluated every --eval-every
seconds) reaches --gate; after --full-at of the budget, top = --max-len regardless. AdamW, linear
warmup, cosine decay (on wall-clock progress) to 10%. bf16 autocast + SDPA on CUDA, fp32 on CPU.

Writes to --out: config.json, model.safetensors (bf16), generation_config.json, tokenizer files,
model_card.md (final held-out exact match per task and length). The weights are also saved at
every evaluation, so a run cut short leaves a checkpoint.

    python -m training.train_llada --device cuda --minutes 7 --workers 3 --out models/llada-ruler-tiny

made the bundled checkpoint (models/llada-ruler-tiny/model_card.md: one H200 call of 449 s, shared
with a second variant of the sweep, so alone it takes more steps in the same 7 minutes). What made
retrieval learnable at all: the RULER-style restated answer prefix ("... answer : the special magic
number for KEY is" -> number), which turns retrieval into an induction continuation, and the
induction rows (--repeat-frac) with whole-sequence masking (--pretrain-frac). Without them six
recipes (depth, width, learning rate, weighting) stayed at 0% held-out after 1600-7000 steps.
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from training.model import LLaDA, generate, llada_config
from training.tasks import TASKS, TaskGenerator, exact_match
from training.tokenizer import save_tokenizer

MASK_EPS = 1e-3


class Batches(torch.utils.data.IterableDataset):
    """Endless training batches [B, L + gen_length]: L log-uniform in [min_len, top], multiple of 64;
    top = `unlocked` (shared with the training loop, which doubles it when held-out accuracy at it
    passes --gate) until --full-at of the budget, then max_len."""

    def __init__(self, args, t0: float):
        self.args, self.t0 = args, t0
        self.unlocked = mp.Value("i", min(args.max_len, 2 * args.min_len))  # shared with workers

    def top(self, progress: float) -> int:
        return self.args.max_len if progress >= self.args.full_at else self.unlocked.value

    def __iter__(self):
        a = self.args
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([a.seed, info.id if info else 0])
        gen = TaskGenerator()
        while True:
            top = self.top((time.time() - self.t0) / (60 * a.minutes))
            length = math.exp(rng.uniform(math.log(a.min_len), math.log(top)))
            length = min(a.max_len, max(a.min_len, int(round(length / 64)) * 64))
            batch = max(1, a.tokens_per_step // (length + a.gen_length))
            x, induction = gen.train_batch(rng, length, batch, a.gen_length, a.tasks, a.repeat_frac)
            yield torch.from_numpy(x), torch.from_numpy(induction), length


def new_window() -> dict:
    """Running sums between log lines (loss, ce, acc stay on the device)."""
    return {"t": time.time(), "tokens": 0, "len": 0, "n": 0, "sums": 0.0}


def diffusion_loss(model, x: torch.Tensor, gen_length: int, mask_id: int, autocast: bool,
                   pretrain_frac: float = 0.0, whole: torch.Tensor | None = None):
    """Masked-diffusion loss on x [B, P + G] (answer region = last G; module docstring); rows
    flagged in `whole` [B] (induction rows) are masked over the whole sequence. Returns
    (loss, plain CE over the masked positions, accuracy over them); no host synchronisation."""
    B, N = x.shape
    G = gen_length
    p = (1 - MASK_EPS) * torch.rand(B, 1, device=x.device) + MASK_EPS
    pos = torch.arange(N, device=x.device)
    region = (pos >= N - G).expand(B, N)
    rows = torch.rand(B, 1, device=x.device) < pretrain_frac
    if whole is not None:
        rows = rows | whole[:, None]
    region = region | (rows & (pos > 0))
    masked = (torch.rand(B, N, device=x.device) < p) & region
    noisy = torch.where(masked, mask_id, x)
    last = G if pretrain_frac == 0 and whole is None else None  # SFT only: answer logits suffice
    with torch.autocast(x.device.type, torch.bfloat16, enabled=autocast):
        logits = model(noisy, last=last)
    if last is not None:
        x, masked, region = x[:, -G:], masked[:, -G:], region[:, -G:]
    ce = F.cross_entropy(logits.float().flatten(0, 1), x.flatten(), reduction="none").view(x.shape)
    weight = masked.float()
    loss = (ce * weight / p / region.sum(1, keepdim=True)).sum() / B
    n = weight.sum().clamp(min=1)
    acc = ((logits.argmax(-1) == x).float() * weight).sum() / n
    return loss, (ce * weight).sum() / n, acc


def evaluate(model, gen: TaskGenerator, lengths, n_items: int, args, ids, autocast: bool,
             batch_tokens: int = 1 << 17) -> dict:
    """Held-out exact match {task: {length: accuracy}} by greedy LLaDA decoding
    (steps = block_length = gen_length)."""
    model.eval()
    device = next(model.parameters()).device
    out = {}
    for task in args.tasks:
        out[task] = {}
        for length in lengths:
            items = gen.test_items(task, length, n_items)
            chunk = max(1, batch_tokens // (length + args.gen_length))
            hits = 0
            for i in range(0, len(items), chunk):
                part = items[i:i + chunk]
                prompt = torch.tensor([it.prompt for it in part], device=device)
                pred = generate(model, prompt, gen_length=args.gen_length, steps=args.gen_length,
                                block_length=args.gen_length, mask_id=ids["mask"], autocast=autocast)
                hits += sum(exact_match(p, it.answer, (ids["eos"], ids["eot"]))
                            for p, it in zip(pred.tolist(), part))
            out[task][length] = hits / len(items)
    model.train()
    return out


def save_checkpoint(model, out: Path, config: dict, ids: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": ids["bos"], "eos_token_id": [ids["eos"], ids["eot"]],
         "pad_token_id": ids["eos"], "max_new_tokens": 16}, indent=1))


def write_model_card(out: Path, args, config: dict, stats: dict, final: dict) -> None:
    lengths = sorted({n for row in final.values() for n in row})
    table = ["| task | " + " | ".join(str(n) for n in lengths) + " |",
             "|---|" + "---|" * len(lengths)]
    for task, row in final.items():
        table.append(f"| {task} | " + " | ".join(f"{row[n]:.2f}" for n in lengths) + " |")
    n_params = stats["params"]
    text = f"""# llada-ruler-tiny

A {n_params / 1e6:.1f}M-parameter LLaDA (masked diffusion, bidirectional attention) trained from
scratch on synthetic RULER-style long-context tasks, so that sparse-attention quality can be
measured on a model whose attention means something. Official LLaDA checkpoint layout
(`LLaDAModelLM`), word-level tokenizer (training/tokenizer.py), bf16 weights.

- sizes: d_model {config['d_model']}, {config['n_layers']} layers, {config['n_heads']} heads of \
{config['d_model'] // config['n_heads']}, mlp {config['mlp_hidden_size']}, vocab {config['vocab_size']}, \
rope_theta {config['rope_theta']:g}, max_sequence_length {config['max_sequence_length']}
- tasks (training/tasks.py): {', '.join(args.tasks)}; prompt lengths {args.min_len}-{args.max_len} \
tokens; answer region gen_length = {args.gen_length} (answer then <|endoftext|> padding)
- decode as trained: max_tokens = steps = block_length = {args.gen_length}, greedy, low_confidence
- command: `python -m training.train_llada {' '.join(sys.argv[1:])}`
- seed {args.seed}; {stats['steps']} steps, {stats['tokens'] / 1e6:.1f}M tokens,
  {stats['train_s']:.0f} s of training on {stats['device']} \
({stats['tokens'] / stats['train_s']:.0f} tokens/s)

## Held-out exact match ({args.final_items} items per cell, greedy, plain torch, bf16 weights)

{chr(10).join(table)}
"""
    (out / "model_card.md").write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--minutes", type=float, default=6.0, help="training wall-clock budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--mlp", type=int, default=768)
    ap.add_argument("--rope-theta", type=float, default=500000.0)
    ap.add_argument("--max-position", type=int, default=8448)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--gen-length", type=int, default=16)
    ap.add_argument("--min-len", type=int, default=128)
    ap.add_argument("--max-len", type=int, default=8192)
    ap.add_argument("--gate", type=float, default=0.4,
                    help="double the longest trained length when mean held-out accuracy there reaches this")
    ap.add_argument("--full-at", type=float, default=0.75,
                    help="fraction of the budget after which all lengths up to max-len are trained")
    ap.add_argument("--pretrain-frac", type=float, default=0.5,
                    help="fraction of rows masked over the whole sequence (LLaDA pre-training); "
                         "the others over the answer region only (SFT)")
    ap.add_argument("--repeat-frac", type=float, default=0.25,
                    help="fraction of rows that are induction rows (a random segment written twice, "
                         "masked anywhere): they teach copying")
    ap.add_argument("--tokens-per-step", type=int, default=65536)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100, help="steps")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=None, help="data processes (default 4 on cuda, 0 on cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--eval-every", type=float, default=40.0, help="seconds")
    ap.add_argument("--eval-items", type=int, default=8)
    ap.add_argument("--final-lengths", type=int, nargs="+", default=None)
    ap.add_argument("--final-items", type=int, default=32)
    args = ap.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    out = Path(args.out)
    ids = save_tokenizer(out)
    vocab = -(-ids["size"] // 64) * 64
    config = llada_config(vocab_size=vocab, d_model=args.d_model, n_layers=args.layers,
                          n_heads=args.heads, mlp_hidden_size=args.mlp,
                          max_sequence_length=args.max_position, rope_theta=args.rope_theta, ids=ids)
    model = LLaDA(config)
    model.init_weights(args.seed)
    model.to(device).train()
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=cuda)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {n_params / 1e6:.2f}M params, vocab {vocab}, {args.device}; budget {args.minutes} min",
          flush=True)

    evalgen = TaskGenerator()
    t0 = time.time()
    budget = 60 * args.minutes
    data = Batches(args, t0)
    workers = args.workers if args.workers is not None else (4 if cuda else 0)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers, pin_memory=cuda,
                                         prefetch_factor=4 if workers else None)
    step, tokens, last_eval = 0, 0, t0
    window = new_window()
    for x, induction, length in loader:
        progress = (time.time() - t0) / budget
        if progress >= 1.0:
            break
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * cosine
        for group in opt.param_groups:
            group["lr"] = lr
        x = x.to(device, non_blocking=True)
        whole = induction.to(device, non_blocking=True) if args.repeat_frac > 0 else None
        loss, ce, acc = diffusion_loss(model, x, args.gen_length, ids["mask"], autocast=cuda,
                                       pretrain_frac=args.pretrain_frac, whole=whole)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += x.numel()
        window["tokens"] += x.numel()
        window["len"] = max(window["len"], int(length))
        window["n"] += 1
        window["sums"] += torch.stack([loss.detach(), ce.detach(), acc.detach()])  # no host sync
        if step % args.log_every == 0 and window["n"]:
            now = time.time()
            loss_m, ce_m, acc_m = (window["sums"] / window["n"]).tolist()
            print(f"step {step:6d} {now - t0:6.0f}s lr {lr:.2e} loss {loss_m:.4f} ce {ce_m:.4f} "
                  f"acc {acc_m:.3f} maxlen {window['len']:5d} "
                  f"{window['tokens'] / (now - window['t']):9.0f} tok/s", flush=True)
            window = new_window()
        if time.time() - last_eval >= args.eval_every:
            top = data.top(progress)
            lengths = sorted({args.min_len, top})
            acc_now = evaluate(model, evalgen, lengths, args.eval_items, args, ids, autocast=cuda)
            mean_top = sum(row[top] for row in acc_now.values()) / len(acc_now)
            if mean_top >= args.gate and top == data.unlocked.value and top < args.max_len:
                data.unlocked.value = min(args.max_len, 2 * top)
            print(f"eval  {step:6d} {time.time() - t0:6.0f}s "
                  + " ".join(f"{t}@{n}={a:.2f}" for t, row in acc_now.items() for n, a in row.items())
                  + f" -> lengths up to {data.top(progress)}", flush=True)
            save_checkpoint(model, out, config, ids)
            last_eval = time.time()
            window = new_window()
    train_s = time.time() - t0
    print(f"trained {step} steps, {tokens / 1e6:.1f}M tokens in {train_s:.0f} s "
          f"({tokens / train_s:.0f} tokens/s)", flush=True)

    with torch.no_grad():  # evaluate what is saved: bf16-rounded weights
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    save_checkpoint(model, out, config, ids)
    final_lengths = args.final_lengths or sorted(
        {args.min_len, *(n for n in (256, 1024, 2048, 4096, 8192) if n <= args.max_len), args.max_len})
    final = evaluate(model, evalgen, final_lengths, args.final_items, args, ids, autocast=cuda)
    for task, row in final.items():
        print(f"final {task:14s} " + " ".join(f"{n}:{a:.2f}" for n, a in row.items()), flush=True)
    stats = {"steps": step, "tokens": tokens, "train_s": train_s, "params": n_params,
             "device": torch.cuda.get_device_name() if cuda else "cpu"}
    write_model_card(out, args, config, stats, final)
    print(f"saved {out} in {time.time() - t0:.0f} s total", flush=True)


if __name__ == "__main__":
    main()
