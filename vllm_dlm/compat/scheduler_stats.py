"""Engine-core -> front-end channel for the denoising metrics: a `dlm_stats` field on vLLM's
`SchedulerStats`.

`SchedulerStats` travels from the engine-core process to the API server inside `EngineCoreOutputs`
(msgspec, decoded by the dataclass's own field list), and has no free-form slot of its own; the
stat logger plugins (`vllm.stat_logger_plugins`) only ever see what it carries. This adds one
optional field, `dlm_stats: dict[str, Any] | None` (default None), which `DiffusionScheduler`
fills (`vllm_dlm.engine.denoising_stats.DenoisingStats.take`) and `DiffusionStatLogger` reads. The field is
added in every process by `register()`, before vLLM encodes or decodes anything; a process without
it ignores the field.

Breaks if: vLLM turns `SchedulerStats` into a msgspec Struct or stops decoding it by its dataclass
fields (checked by tests/test_metrics.py).
"""

import dataclasses
from typing import Any

FIELD = "dlm_stats"


def install() -> None:
    from vllm.v1.metrics.stats import SchedulerStats

    if FIELD in SchedulerStats.__dataclass_fields__:
        return
    field = dataclasses.field(default=None)
    field.name, field.type = FIELD, dict[str, Any] | None
    field._field_type = dataclasses._FIELD  # what @dataclass gives an ordinary field
    SchedulerStats.__dataclass_fields__[FIELD] = field
    SchedulerStats.__annotations__[FIELD] = dict[str, Any] | None
    setattr(SchedulerStats, FIELD, None)  # the default, for instances built by __init__
