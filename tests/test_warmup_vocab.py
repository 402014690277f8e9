"""The GPU kernel warm-up's dummy prompts are kept inside a small model's vocabulary."""

from vllm.v1.core.sched.output import NewRequestData, SchedulerOutput

from vllm_dlm.compat import warmup_vocab


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
    execute = warmup_vocab.within_vocab(lambda so: seen.append(so) or "result", vocab_size=448)
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
    assert wrapped._dlm_within_vocab
    warmup_vocab.install()
    assert gpu_worker.warmup_kernels is wrapped
