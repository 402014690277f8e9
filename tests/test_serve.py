"""`vllm serve` of a tiny LLaDA checkpoint in a subprocess, queried with the OpenAI client:
reference parity, chat, streaming by committed blocks, and HTTP 400 for bad knobs."""

import os
import shutil
import socket
import subprocess
import sys
import time

import openai
import pytest
import requests
import torch

from tests.reference.dream import DreamReference, dream_generate
from tests.reference.llada import LLaDAReference, llada_generate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(checkpoint: str, name: str, log_dir, extra_args=()):
    """Start `vllm serve` on a free loopback port; yield (OpenAI client, process)."""
    port = _free_port()
    vllm_cli = shutil.which("vllm", path=os.path.dirname(sys.executable)) or "vllm"
    log_path = log_dir / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [vllm_cli, "serve", checkpoint, "--host", "127.0.0.1", "--port", str(port),
         "--dtype", "float32", "--enforce-eager", "--max-model-len", "512", "--seed", "0",
         "--served-model-name", name, *extra_args],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited:\n{log_path.read_text()[-5000:]}")
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(2)
    else:
        proc.kill()
        raise RuntimeError(f"vllm serve did not come up:\n{log_path.read_text()[-5000:]}")
    yield openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0), proc
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(tiny_llada, tmp_path_factory):
    yield from _serve(tiny_llada, "tiny-llada", tmp_path_factory.mktemp("serve-llada"))


@pytest.fixture(scope="module")
def dream_server(tiny_dream, tmp_path_factory):
    yield from _serve(tiny_dream, "tiny-dream", tmp_path_factory.mktemp("serve-dream"))


def test_completion_matches_reference(server, tiny_llada):
    client, _ = server
    resp = client.completions.create(
        model="tiny-llada", prompt="The quick brown fox", max_tokens=16, temperature=0.0,
        extra_body={"steps": 8, "block_length": 8, "ignore_eos": True, "return_token_ids": True},
    )
    choice = resp.choices[0]
    prompt_ids = choice.prompt_token_ids
    ref = LLaDAReference.from_pretrained(tiny_llada).eval()
    with torch.no_grad():
        expected = llada_generate(
            ref, torch.tensor([prompt_ids]), steps=8, gen_length=16, block_length=8,
            mask_id=ref.config["mask_token_id"],
        )[0, len(prompt_ids):].tolist()
    assert choice.token_ids == expected


def test_dream_completion_matches_reference(dream_server, tiny_dream):
    client, _ = dream_server
    resp = client.completions.create(
        model="tiny-dream", prompt="Hello, who are you?", max_tokens=16, temperature=0.0,
        extra_body={"steps": 8, "remasking": "maskgit_plus", "ignore_eos": True, "return_token_ids": True},
    )
    choice = resp.choices[0]
    ref = DreamReference.from_pretrained(tiny_dream).eval()
    with torch.no_grad():
        expected = dream_generate(
            ref, torch.tensor([choice.prompt_token_ids]), max_new_tokens=16, steps=8,
            alg="maskgit_plus", mask_token_id=ref.config["mask_token_id"],
        )[0, len(choice.prompt_token_ids):].tolist()
    assert choice.token_ids == expected


def test_chat_completion_with_vllm_xargs(server):
    client, _ = server
    resp = client.chat.completions.create(
        model="tiny-llada", messages=[{"role": "user", "content": "Hello, who are you?"}],
        max_tokens=16, temperature=0.0,
        extra_body={"vllm_xargs": {"steps": 8, "block_length": 8}, "ignore_eos": True},
    )
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 16


def test_streaming_delivers_blocks_as_they_commit(server):
    client, _ = server
    kwargs = dict(model="tiny-llada", prompt="Once upon a time", max_tokens=24, temperature=0.0,
                  extra_body={"steps": 6, "block_length": 8, "ignore_eos": True})
    full = client.completions.create(**kwargs).choices[0].text
    chunks = [c.choices[0].text for c in client.completions.create(stream=True, **kwargs) if c.choices]
    assert "".join(chunks) == full
    assert sum(1 for c in chunks if c) >= 2  # 3 blocks arrive as separate deltas


@pytest.mark.parametrize(
    "extra, named",
    [({"steps": 5, "block_length": 8}, "steps"), ({"remasking": "nope"}, "remasking"),
     ({"cache": "bogus"}, "cache"), ({"vllm_xargs": {"blocklen": 4}}, "blocklen")],
)
def test_bad_knob_is_http_400_naming_it_and_server_keeps_serving(server, extra, named):
    client, proc = server
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny-llada", prompt="hi", max_tokens=16, extra_body=extra)
    assert err.value.status_code == 400 and named in str(err.value)
    ok = client.completions.create(model="tiny-llada", prompt="hi", max_tokens=8, temperature=0.0,
                                   extra_body={"ignore_eos": True})
    assert ok.usage.completion_tokens == 8 and proc.poll() is None


def _metric(base: str, name: str) -> float:
    """Sum of a Prometheus metric's samples on the server's /metrics (0 when absent)."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def test_metrics_count_denoising_steps_blocks_and_refresh_passes(server):
    client, _ = server
    base = str(client.base_url).rstrip("/").removesuffix("/v1")
    names = ("vllm:dlm_denoising_steps_total", "vllm:dlm_full_passes_total",
             "vllm:dlm_blocks_committed_total", "vllm:dlm_steps_per_block_sum")
    before = [_metric(base, n) for n in names]
    # 3 blocks of 8, 2 steps each; cache prefix: one full pass per block
    client.completions.create(model="tiny-llada", prompt="Once upon a time", max_tokens=24,
                              temperature=0.0, extra_body={"steps": 6, "block_length": 8,
                                                           "cache": "prefix", "ignore_eos": True})
    expected = [6, 3, 3, 6]
    deadline = time.time() + 30
    while True:  # stats reach the front end with the engine's outputs, possibly a step later
        delta = [_metric(base, n) - b for n, b in zip(names, before)]
        if delta == expected or time.time() > deadline:
            break
        time.sleep(0.5)
    assert delta == expected, dict(zip(names, delta))
