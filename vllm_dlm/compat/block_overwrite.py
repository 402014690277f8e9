"""Model Runner V2 honours `CachedRequestData.resumed_req_ids`: their `new_block_ids` replace the
request's block-table row instead of being appended.

That is the field's documented meaning (`vllm/v1/core/sched/output.py`). V2 never needed it, since
vLLM sends a resumed request as a new one, so its `update_requests` always appends. Page eviction
(`engine.evicted_pages`) refills a running request's freed pages at its next refresh and sends its
whole block list this way.

Breaks if: vLLM renames `GPUModelRunner.update_requests`, `block_tables.append_block_ids` or
`req_states.req_id_to_index` (tests/test_eviction_engine.py's page-return test then fails).
"""

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from vllm.v1.worker.gpu.model_runner import GPUModelRunner

    update_requests = GPUModelRunner.update_requests

    def update_requests_with_overwrite(self, scheduler_output) -> None:
        reqs = scheduler_output.scheduled_cached_reqs
        if not reqs.resumed_req_ids:
            return update_requests(self, scheduler_output)
        replaced = {}
        for i, req_id in enumerate(reqs.req_ids):
            if req_id in reqs.resumed_req_ids and reqs.new_block_ids[i] is not None:
                replaced[i] = reqs.new_block_ids[i]
                reqs.new_block_ids[i] = None  # not appended by vLLM's loop
        try:
            update_requests(self, scheduler_output)
        finally:
            for i, block_ids in replaced.items():
                reqs.new_block_ids[i] = block_ids
        for i, block_ids in replaced.items():
            req_index = self.req_states.req_id_to_index[reqs.req_ids[i]]
            self.block_tables.append_block_ids(req_index, block_ids, overwrite=True)

    GPUModelRunner.update_requests = update_requests_with_overwrite
    _installed = True
