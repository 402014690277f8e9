"""Synthetic long-context tasks in the spirit of RULER, generated as token ids.

Every item is a prompt of exactly `length` tokens (<|startoftext|>, a haystack of filler prose with
the task's lines inserted at sentence boundaries, a question, "answer :" and, as RULER's templates
do, the start of the answer sentence restated from the needle) and a short answer (<= 8 tokens). The model sees the answer region as `gen_length` tokens: the answer, then
<|endoftext|> up to gen_length (LLaDA SFT's EOS padding, learned and emitted).

  niah_single    one needle "the special magic number for KEY is 123456 ." ; asks for KEY's number
                 ("... ? answer : the special magic number for KEY is" -> "123456")
  niah_multikey  four needles with different keys and numbers; asks for one of them
  vt             variable tracking: two chains "var A = 12345 ." "var B = var A ." ... (4 variables
                 each); asks "which variables are assigned the value 12345 ? answer :" -> "A B C D"
  copy           "the secret code is QXZKMWP ." ; asks for the code (7 capital letters)
                 ("... ? answer : the secret code is" -> "QXZKMWP")

`induction_row` makes the training-only rows of a random segment written twice (every token of the
second copy predictable from the first and back), which teach the copy circuits the tasks need.

Splits: the held-out test split is disjoint from train by construction, not by chance: an item
belongs to the test split iff crc32 of its answer tokens is 0 mod 8 (`split_of`); the training
sampler rejects test answers. Test items are a pure function of (task, length, index) (their own
seed); train items come from the caller's generator. The filler prose is shared (a fixed stream of
template sentences) and carries no answer.
"""

import zlib
from dataclasses import dataclass

import numpy as np

from training.tokenizer import ADJECTIVES, ADVERBS, FILLER_NOUNS, KEYS, VERBS, make_tokenizer

TASKS = ("niah_single", "niah_multikey", "vt", "copy")
TEST_SEED = 20251
FILLER_SEED = 7
TEMPLATES = [
    "the {a} {n} {v} the {n} .",
    "a {n} is {a} and the {n} is {a} .",
    "every {n} {v} a {a} {n} {d} .",
    "there was a {a} {n} near the {n} .",
    "we go back to the {n} {d} .",
    "then the {n} {v} some {a} {n} on the {n} .",
    "the {n} was {a} but the {n} was {a} .",
    "here the {n} {v} the {n} by the {n} .",
    "she {v} the {n} with a {a} {n} .",
    "he {v} many {n} from the {n} when it is {a} .",
    "in the {a} {n} they go over the {n} {d} .",
    "it was {a} at the {n} while the {n} was {a} .",
]


@dataclass(frozen=True)
class Item:
    """One task instance. prompt: `length` token ids (bos first); answer: <= 8 ids, no EOS."""

    task: str
    length: int
    prompt: list
    answer: list


def split_of(answer) -> str:
    """"test" for 1 in 8 answers (crc32 of the int32 ids), else "train"."""
    return "test" if zlib.crc32(np.asarray(answer, np.int32).tobytes()) % 8 == 0 else "train"


def target(item: Item, gen_length: int, eos_id: int) -> list:
    """The answer region as trained: answer + EOS up to gen_length."""
    return list(item.answer) + [eos_id] * (gen_length - len(item.answer))


def exact_match(output, answer, stop_ids) -> bool:
    """output (generated ids) cut at its first stop id equals the answer."""
    out = list(output)
    cut = next((i for i, t in enumerate(out) if t in set(stop_ids)), len(out))
    return out[:cut] == list(answer)


class TaskGenerator:
    """Builds items from token-id pieces (numpy), fast enough to feed a GPU from one CPU process."""

    def __init__(self, filler_tokens: int = 400_000):
        self.tok = make_tokenizer()
        vocab = self.tok.get_vocab()
        self.bos = vocab["<|startoftext|>"]
        self.eos = vocab["<|endoftext|>"]
        self.stop_ids = (self.eos, vocab["<|eot_id|>"])  # generation_config's eos_token_id
        self.digit = np.array([[vocab["\u2581" + c], vocab[c]] for c in "0123456789"])  # [10, 2]
        self.cap = np.array([[vocab["\u2581" + c], vocab[c]] for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"])
        self.keys = np.array([vocab["\u2581" + k] for k in KEYS])
        self._text = {}
        self.filler, self.bounds = self._filler_stream(filler_tokens)
        self.task_tokens = np.unique(np.concatenate(
            [self.filler, self.digit.ravel(), self.cap.ravel(), self.keys]))

    def t(self, text: str) -> np.ndarray:
        """Token ids of a template fragment (no bos), cached."""
        if text not in self._text:
            self._text[text] = np.array(self.tok.encode(text, add_special_tokens=False).ids)
        return self._text[text]

    def _filler_stream(self, n_tokens: int):
        """A fixed stream of template sentences: ids [n] and sentence start offsets [S + 1]."""
        rng = np.random.default_rng(FILLER_SEED)
        words = {"a": ADJECTIVES, "n": FILLER_NOUNS, "v": VERBS, "d": ADVERBS}
        sentences = []
        for _ in range(n_tokens // 8):
            tmpl = TEMPLATES[rng.integers(len(TEMPLATES))]
            parts = [words[p[1]][rng.integers(len(words[p[1]]))] if p[:1] == "{" else p
                     for p in tmpl.split()]
            sentences.append(" ".join(parts))
        encoded = [e.ids for e in self.tok.encode_batch(sentences, add_special_tokens=False)]
        lengths = np.array([len(e) for e in encoded])
        return np.concatenate(encoded), np.concatenate([[0], np.cumsum(lengths)])

    def _number(self, rng, n_digits: int) -> np.ndarray:
        d = rng.integers(0, 10, n_digits)
        d[0] = rng.integers(1, 10)
        return np.concatenate([self.digit[d[:1], 0], self.digit[d[1:], 1]])

    def _haystack(self, rng, n: int, lines: list) -> np.ndarray:
        """n filler tokens ending at a sentence boundary, with `lines` (id arrays, in order)
        inserted at random sentence boundaries inside it."""
        lo = np.searchsorted(self.bounds, n)
        end = self.bounds[rng.integers(lo, len(self.bounds))]
        start = end - n
        inner = self.bounds[(self.bounds >= start) & (self.bounds <= end)] - start
        cuts = np.sort(rng.choice(inner, size=len(lines))) if len(inner) else np.full(len(lines), n)
        pieces, prev = [], 0
        for cut, line in zip(cuts, lines):
            pieces += [self.filler[start + prev:start + cut], line]
            prev = cut
        pieces.append(self.filler[start + prev:end])
        return np.concatenate(pieces)

    def _build(self, task: str, rng) -> tuple[list, np.ndarray, np.ndarray]:
        """(lines to hide, question ids, answer ids) for one random instance of `task`."""
        t = self.t
        if task in ("niah_single", "niah_multikey"):
            k = 1 if task == "niah_single" else 4
            keys = rng.choice(self.keys, size=k, replace=False)
            values = [self._number(rng, 6) for _ in range(k)]
            lines = [np.concatenate([t("the special magic number for"), [key], t("is"), v, t(".")])
                     for key, v in zip(keys, values)]
            ask = rng.integers(k)
            question = np.concatenate([t("question : what is the special magic number for"),
                                       [keys[ask]], t("? answer : the special magic number for"),
                                       [keys[ask]], t("is")])
            return lines, question, values[ask]
        if task == "vt":
            chains, chain_len = 2, 4
            names = self.cap[rng.choice(26, size=chains * chain_len, replace=False), 0]
            names = names.reshape(chains, chain_len)
            values = [self._number(rng, 5) for _ in range(chains)]
            order = rng.permutation(np.repeat(np.arange(chains), chain_len))  # interleave chains
            pos = [0] * chains
            lines = []
            for c in order:
                i, pos[c] = pos[c], pos[c] + 1
                rhs = values[c] if i == 0 else np.concatenate([t("var"), [names[c, i - 1]]])
                lines.append(np.concatenate([t("var"), [names[c, i]], t("="), rhs, t(".")]))
            ask = rng.integers(chains)
            question = np.concatenate([t("question : which variables are assigned the value"),
                                       values[ask], t("? answer :")])
            return lines, question, names[ask]
        if task == "copy":
            letters = rng.integers(0, 26, 7)
            code = np.concatenate([self.cap[letters[:1], 0], self.cap[letters[1:], 1]])
            line = np.concatenate([t("the secret code is"), code, t(".")])
            return [line], t("question : what is the secret code ? answer : the secret code is"), code
        raise ValueError(f"unknown task {task!r}; tasks are {TASKS}")

    def item(self, task: str, length: int, rng, split: str) -> Item:
        """A random `task` item of exactly `length` prompt tokens from `split` ("train"/"test")."""
        while True:
            lines, question, answer = self._build(task, rng)
            if split_of(answer) == split:
                break
        n = length - 1 - len(question) - sum(len(x) for x in lines)
        if n < 0:
            raise ValueError(f"length={length} is too short for {task} (needs {length - n})")
        prompt = np.concatenate([[self.bos], self._haystack(rng, n, lines), question])
        assert len(prompt) == length
        return Item(task, length, prompt.tolist(), answer.tolist())

    def test_items(self, task: str, length: int, n: int, start: int = 0) -> list[Item]:
        """Held-out items start..start+n-1 of (task, length): the same on every machine."""
        return [self.item(task, length, np.random.default_rng([TEST_SEED, TASKS.index(task), length, i]),
                          "test") for i in range(start, start + n)]

    def induction_row(self, rng, n: int) -> np.ndarray:
        """bos, then a random segment of task tokens (words, digits, capitals, keys) written twice
        (the second copy cut to fit): n ids."""
        seg = rng.choice(self.task_tokens, size=n // 2)  # ceil((n - 1) / 2): after bos
        return np.concatenate([[self.bos], seg, seg])[:n]

    def train_batch(self, rng, length: int, batch: int, gen_length: int, tasks=TASKS,
                    repeat_frac: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """([batch, length + gen_length] int64, [batch] bool): train prompts + answer regions,
        tasks mixed; a `repeat_frac` share of the rows are induction rows (flagged True)."""
        out = np.empty((batch, length + gen_length), np.int64)
        induction = rng.random(batch) < repeat_frac
        for b in range(batch):
            if induction[b]:
                out[b] = self.induction_row(rng, length + gen_length)
                continue
            it = self.item(tasks[rng.integers(len(tasks))], length, rng, "train")
            out[b, :length] = it.prompt
            out[b, length:] = target(it, gen_length, self.eos)
        return out, induction
