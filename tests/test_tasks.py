"""The synthetic long-context tasks (training/tasks.py) and their tokenizer: exact prompt lengths,
short answers that are in the context, held-out split disjoint from train, deterministic test
items, HF round trip, EOS-stripping scorer. No engine; a few seconds."""

import numpy as np
import pytest

from training.tasks import TASKS, TaskGenerator, exact_match, split_of, target


@pytest.fixture(scope="module")
def gen():
    return TaskGenerator()


@pytest.mark.parametrize("task", TASKS)
def test_items_have_the_exact_length_and_a_short_answer_from_the_context(gen, task):
    for length in (128, 333, 2048):
        for it in gen.test_items(task, length, 3):
            assert len(it.prompt) == length and it.prompt[0] == gen.bos
            assert 1 <= len(it.answer) <= 8
            assert gen.eos not in it.prompt
            if task != "vt":  # the answer is a contiguous span of the haystack
                windows = np.lib.stride_tricks.sliding_window_view(it.prompt, len(it.answer))
                assert (windows == it.answer).all(1).sum() == 1


def test_held_out_split_is_disjoint_from_train(gen):
    rng = np.random.default_rng(0)
    train = {tuple(gen.item(t, 128, rng, "train").answer) for t in TASKS for _ in range(300)}
    test = {tuple(it.answer) for t in TASKS for it in gen.test_items(t, 128, 100)}
    assert all(split_of(a) == "train" for a in train) and all(split_of(a) == "test" for a in test)
    assert not train & test
    batch, induction = gen.train_batch(rng, 256, 64, 16)
    assert batch.shape == (64, 272) and (batch[:, -16:][:, -1] == gen.eos).all()
    assert not induction.any()


def test_induction_rows_repeat_a_segment(gen):
    rng = np.random.default_rng(1)
    batch, induction = gen.train_batch(rng, 256, 200, 16, repeat_frac=0.5)
    assert 60 < induction.sum() < 140
    for row in batch[induction]:
        half = len(row) // 2
        assert row[0] == gen.bos and (row[1:1 + half][: len(row) - 1 - half] == row[1 + half:]).all()
        assert gen.eos not in row[1:] and gen.tok.token_to_id("<|mdm_mask|>") not in row
    for row in batch[~induction]:
        assert row[-1] == gen.eos


def test_test_items_depend_only_on_task_length_and_index(gen):
    assert gen.test_items("vt", 300, 4)[2:] == gen.test_items("vt", 300, 2, start=2)
    assert gen.test_items("vt", 300, 1) != gen.test_items("vt", 301, 1)


def test_hf_tokenizer_round_trips_the_task_text(gen, tmp_path):
    from transformers import AutoTokenizer

    from training.tokenizer import save_tokenizer

    ids = save_tokenizer(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert (hf.bos_token_id, hf.eos_token_id, hf.mask_token_id) == (ids["bos"], ids["eos"], ids["mask"])
    for task in TASKS:
        it = gen.test_items(task, 200, 1)[0]
        assert hf.encode(hf.decode(it.prompt, skip_special_tokens=True)) == it.prompt
        assert hf.encode(hf.decode(it.answer), add_special_tokens=False) == it.answer


def test_exact_match_cuts_at_the_first_stop_token(gen):
    it = gen.test_items("copy", 128, 1)[0]
    region = target(it, 16, gen.eos)
    assert len(region) == 16 and exact_match(region, it.answer, gen.stop_ids)
    assert exact_match(it.answer, it.answer, gen.stop_ids)  # stopped early, no padding
    assert not exact_match(it.answer[:-1] + [gen.eos], it.answer, gen.stop_ids)
    assert not exact_match(it.answer + [5, gen.eos], it.answer, gen.stop_ids)
