"""Denoising metrics: the engine-side counters, their ride on vLLM's SchedulerStats from the
engine-core process to the front end (msgpack, as vLLM sends it), and the Prometheus metrics the
stat logger plugin makes of them. (tests/test_serve.py checks them end to end on /metrics.)"""

from prometheus_client import REGISTRY
from vllm.v1.engine import EngineCoreOutputs
from vllm.v1.metrics.stats import SchedulerStats
from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

import vllm_dlm
from vllm_dlm.engine.denoising_stats import DenoisingStats
from vllm_dlm.engine.stat_logger import DiffusionStatLogger


def test_payload_survives_the_engine_core_to_front_end_encoding():
    vllm_dlm.register()
    stats = DenoisingStats(denoising_steps=7, full_passes=2, kv_pages_returned=5)
    stats.record_block(4, 32)
    sched = SchedulerStats(num_running_reqs=1)
    sched.dlm_stats = stats.take()
    wire = MsgpackEncoder().encode(EngineCoreOutputs(scheduler_stats=sched))
    got = MsgpackDecoder(EngineCoreOutputs).decode(wire).scheduler_stats
    assert got.dlm_stats == {"denoising_steps": 7, "full_passes": 2, "kv_pages_returned": 5, "blocks": [[4, 32]]}
    assert got.num_running_reqs == 1
    assert stats.take() == {"denoising_steps": 0, "full_passes": 0, "kv_pages_returned": 0,
                            "blocks": []}  # new interval
    assert SchedulerStats().dlm_stats is None


class _Config:
    class model_config:
        served_model_name = "metrics-test"


def test_stat_logger_turns_payloads_into_prometheus_metrics():
    vllm_dlm.register()
    stat_logger = DiffusionStatLogger(_Config(), engine_index=3)
    labels = {"model_name": "metrics-test", "engine": "3"}

    def value(name):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = [value(n) for n in ("vllm:dlm_denoising_steps_total", "vllm:dlm_full_passes_total",
                                 "vllm:dlm_blocks_committed_total", "vllm:dlm_steps_per_block_sum",
                                 "vllm:dlm_tokens_per_step_sum", "vllm:dlm_tokens_per_step_count",
                                 "vllm:dlm_kv_pages_returned_total")]
    for payload in ({"denoising_steps": 5, "full_passes": 1, "kv_pages_returned": 6, "blocks": [[4, 32]]},
                    {"denoising_steps": 3, "full_passes": 3, "blocks": [[2, 8], [1, 8]]}):
        sched = SchedulerStats()
        sched.dlm_stats = payload
        stat_logger.record(sched, None)
    stat_logger.record(SchedulerStats(), None)  # no payload (not a diffusion step): ignored
    stat_logger.record(None, None)
    after = [value(n) for n in ("vllm:dlm_denoising_steps_total", "vllm:dlm_full_passes_total",
                                "vllm:dlm_blocks_committed_total", "vllm:dlm_steps_per_block_sum",
                                "vllm:dlm_tokens_per_step_sum", "vllm:dlm_tokens_per_step_count",
                                "vllm:dlm_kv_pages_returned_total")]
    assert [a - b for a, b in zip(after, before)] == [8, 4, 3, 7, 8 + 4 + 8, 3, 6]
    assert REGISTRY.get_sample_value("vllm:dlm_steps_per_block_bucket", {**labels, "le": "1.0"}) == 1
    assert (stat_logger.steps, stat_logger.blocks, stat_logger.block_tokens) == (8, 3, 48)
    stat_logger.log()
    assert stat_logger.steps == 0  # interval reset
