"""The GPU kernel warm-up's dummy requests are kept inside a small model's vocabulary and inside
max_model_len (its canvas capped for the warm-up only)."""

from vllm.v1.core.sched.output import NewRequestData, SchedulerOutput

from types import SimpleNamespace

from vllm_dlm.compat import warmup_limits


def _new_request(req_id: str, ids: list[int]) -> NewRequestData:
    return NewRequestData(
        req_id=req_id,
        prompt_token_ids=list(ids),
        mm_features=[],
        sampling_params=None,
        pooling_params=None,
        block_ids=([1],),
        num_computed_tokens=0,
        lora_request=None,
        prefill_token_ids=list(ids),
    )


def test_within_vocab_reduces_new_request_ids_and_passes_output_through():
    seen = []
    output = SchedulerOutput.make_empty()
    output.scheduled_new_reqs = [_new_request("a", range(1025)), _new_request("b", [3, 447])]
    execute = warmup_limits.within_vocab(lambda so: seen.append(so) or "result", vocab_size=448)
    assert execute(output) == "result"
    assert seen == [output]
    a, b = output.scheduled_new_reqs
    assert max(a.prompt_token_ids) == 447 and a.prompt_token_ids[448] == 0
    assert a.prefill_token_ids == a.prompt_token_ids
    assert b.prompt_token_ids == [3, 447]


def test_install_wraps_the_workers_warmup_once():
    import vllm_dlm
    from vllm.v1.worker import gpu_worker

    vllm_dlm.register()
    wrapped = gpu_worker.warmup_kernels
    assert wrapped._dlm_within_limits
    warmup_limits.install()
    assert gpu_worker.warmup_kernels is wrapped


def _runner(max_model_len: int, canvas: int):
    config = SimpleNamespace(max_model_len=max_model_len, get_vocab_size=lambda: 448)
    return SimpleNamespace(model_config=config, decode_query_len=canvas, num_speculative_steps=canvas)


def test_warmup_sequence_fits_max_model_len_and_the_canvas_comes_back():
    seen = {}

    def warmup_kernels(model_runner, execute_model, sample_tokens):
        # vLLM's warm-up: prompt of decode_query_len + 1 tokens, then decode_query_len more
        seen["len"] = 2 * model_runner.decode_query_len + 1
        seen["spec"] = model_runner.num_speculative_steps
        output = SchedulerOutput.make_empty()
        output.scheduled_new_reqs = [_new_request("a", range(model_runner.decode_query_len + 1))]
        execute_model(output)
        seen["max_id"] = max(output.scheduled_new_reqs[0].prompt_token_ids)
        raise RuntimeError("stop")  # the canvas is restored on errors too

    runner = _runner(1344, 1024)
    try:
        warmup_limits.within_limits(warmup_kernels)(runner, lambda so: None, lambda g: None)
    except RuntimeError:
        pass
    assert seen == {"len": 1343, "spec": 671, "max_id": 447}
    assert runner.decode_query_len == 1024 and runner.num_speculative_steps == 1024
    roomy = _runner(4096, 1024)
    warmup_limits.within_limits(lambda r, e, s: seen.update(len=2 * r.decode_query_len + 1))(roomy, None, None)
    assert seen["len"] == 2049  # long enough already: unchanged
