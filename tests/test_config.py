"""Knob resolution and validation (vllm_dlm.config): defaults, and a named error for each bad input."""

import pytest

from vllm_dlm.config import ServerDefaults, parse_server_defaults, resolve_decoding_params


def resolve(family="llada", max_tokens=64, defaults=ServerDefaults(), **extra):
    return resolve_decoding_params(family, max_tokens=max_tokens, extra_args=extra, defaults=defaults)


def test_llada_defaults_are_steps_eq_max_tokens_and_block_32():
    p = resolve(max_tokens=64)
    assert (p.steps, p.block_length, p.remasking, p.cache) == (64, 32, "low_confidence", "none")
    assert (p.num_blocks, p.steps_per_block) == (2, 32)


def test_llada_default_block_is_whole_generation_when_shorter_than_32():
    assert resolve(max_tokens=16).block_length == 16


def test_dream_defaults_to_one_block_like_diffusion_generate():
    p = resolve("dream", max_tokens=48)
    assert (p.block_length, p.steps, p.remasking) == (48, 48, "entropy")


def test_server_defaults_apply_and_request_overrides_them():
    defaults = parse_server_defaults({"dlm": {"steps": 8, "block_length": 16}})
    assert resolve(max_tokens=32, defaults=defaults).steps == 8
    assert resolve(max_tokens=32, defaults=defaults, steps=4).steps == 4


@pytest.mark.parametrize(
    "extra, max_tokens, named",
    [
        ({"stepz": 3}, 64, "stepz"),
        ({"steps": "8"}, 64, "steps"),
        ({"steps": True}, 64, "steps"),
        ({"steps": 0}, 64, "steps"),
        ({"block_length": 24}, 64, "block_length"),
        ({"block_length": 0}, 64, "block_length"),
        ({"steps": 3, "block_length": 32}, 64, "steps"),
        ({"remasking": "entropy"}, 64, "remasking"),
        ({"remasking": "bogus"}, 64, "remasking"),
        ({"cache": "bogus"}, 64, "cache"),
        ({"threshold": 0.9, "remasking": "random"}, 64, "threshold"),
        ({"threshold": 1.5}, 64, "threshold"),
        ({"threshold": 0.0}, 64, "threshold"),
        ({"alg_temp": 0.5}, 64, "alg_temp"),
        ({}, 50, "block_length"),
        ({}, 0, "max_tokens"),
        ({}, 5000, "max_tokens"),
        ({"select": 0}, 64, "select"),
        ({"select": 1.5}, 64, "select"),
        ({"select": "0.3"}, 64, "select"),
        ({"skip": -0.1}, 64, "skip"),
        ({"skip": 1.2}, 64, "skip"),
        ({"block_size": 48}, 64, "block_size"),
        ({"block_size": 8}, 64, "block_size"),
        ({"block_size": 2048}, 64, "block_size"),
        ({"block_size": 64.0}, 64, "block_size"),
        ({"isolated": 1}, 64, "isolated"),
    ],
)
def test_bad_llada_knob_raises_naming_it(extra, max_tokens, named):
    with pytest.raises(ValueError, match=named):
        resolve(max_tokens=max_tokens, **extra)


def test_dream_rejects_cached_modes_it_cannot_support():
    for cache in ("prefix", "dual"):
        with pytest.raises(ValueError, match="cache"):
            resolve("dream", cache=cache)


def test_dream_rejects_llada_remasking_and_negative_alg_temp():
    with pytest.raises(ValueError, match="remasking"):
        resolve("dream", remasking="low_confidence")
    with pytest.raises(ValueError, match="alg_temp"):
        resolve("dream", alg_temp=-1.0)


@pytest.mark.parametrize(
    "section, named",
    [({"dlm": {"nope": 1}}, "nope"), ({"dlm": {"steps": "x"}}, "steps"), ({"dlm": 3}, "dlm")],
)
def test_bad_server_defaults_raise_naming_the_key(section, named):
    with pytest.raises(ValueError, match=named):
        parse_server_defaults(section)


def test_sparsed_defaults_are_the_papers_and_switch_after_the_skip_fraction():
    p = resolve(max_tokens=64, steps=64).sparsed
    assert (p.skip, p.select, p.block_size, p.isolated) == (0.2, 0.3, 128, True)
    assert p.switch_step(64) == 13  # SparseD's code: dense through step int(skip * steps) + 1
    assert resolve(max_tokens=64, skip=1.0).sparsed.switch_step(64) is None
    assert resolve(max_tokens=64, select=1.0).sparsed.switch_step(64) is None
    assert resolve(max_tokens=64, skip=0.0).sparsed.switch_step(64) == 1
    assert resolve(max_tokens=64, skip=0.98).sparsed.switch_step(64) is None  # no step after it


def test_sparsed_server_defaults_apply_and_request_overrides_them():
    defaults = parse_server_defaults({"dlm": {"select": 0.5, "block_size": 64}})
    p = resolve(max_tokens=32, defaults=defaults, block_size=32).sparsed
    assert (p.select, p.block_size) == (0.5, 32)
