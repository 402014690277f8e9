"""Page eviction gives memory back: the scheduler's side of `evict_unit="page"`.

When a request's block selects its kept pages, the worker moves every layer's kept pages onto the
same live pages (`attention.sparsity.eviction.live_pages` / `compact_kept_pages`); the request's
other pages are then dead for all layers until the next block's refresh, which recomputes the whole
sequence. Here, after that selection step:

  free     the dead pages go back to vLLM's block pool and become null blocks in the request's
           block list (as vLLM's sliding-window manager does), so the pool admits more requests;
  refill   at the request's next refresh (a full pass) the holes get fresh pages inside vLLM's own
           `allocate_slots`: when the pool is short it answers "cannot allocate", and vLLM's
           scheduler preempts its lowest-priority request and retries, as for any request;
  send     the refilled request's whole block list goes to the worker as a replacement, marked
           in `CachedRequestData.resumed_req_ids`, whose documented meaning is exactly that
           (`compat.block_overwrite` makes Model Runner V2 honour it).

Between selection and refresh the worker's block table still lists the freed pages, but nothing
reads or writes them: the block's own pages are live, and kept pages are reached through the
per-layer physical page lists.
"""

from vllm.logger import init_logger

from vllm_dlm.attention.sparsity.eviction import live_pages

logger = init_logger(f"vllm.dlm.{__name__}")


class EvictedPages:
    def __init__(self, kv_cache_manager, page_size: int) -> None:
        self.manager = kv_cache_manager
        self.pool = kv_cache_manager.block_pool
        self.page_size = page_size
        groups = kv_cache_manager.coordinator.single_type_managers
        self.enabled = len(groups) == 1  # one KV-cache group: one block list per request
        self._blocks = groups[0].req_to_blocks if self.enabled else {}
        self.holes: dict[str, list[int]] = {}  # req_id -> indices of its null blocks
        self.refilled: set[str] = set()  # block lists to send whole in this step's output
        self.pages_freed = 0
        if self.enabled:
            allocate = kv_cache_manager.allocate_slots

            def allocate_slots(request, *args, **kwargs):
                refresh = request.num_computed_tokens == 0  # a full pass rewrites every page
                if refresh and request.request_id in self.holes and not self._refill(request.request_id):
                    return None  # vLLM preempts its lowest-priority request and asks again
                return allocate(request, *args, **kwargs)

            kv_cache_manager.allocate_slots = allocate_slots

    def free_dead(self, req_id: str, seq_len: int, block_start: int, block_length: int,
                  keep_ratio: float) -> int:
        """After the request's selection step: return the pages no layer keeps (-> how many)."""
        blocks = self._blocks.get(req_id)
        if not self.enabled or blocks is None:
            return 0
        num_pages = -(-seq_len // self.page_size)
        if len(blocks) < num_pages:  # not expected after a whole step; keep the pages rather than guess
            logger.warning_once("vllm-dlm: page eviction kept the pages of request %s (%d blocks for %d pages)",
                                req_id, len(blocks), num_pages)
            return 0
        live = set(live_pages(seq_len, block_start, block_length, keep_ratio, self.page_size))
        dead = [i for i in range(num_pages) if i not in live and not blocks[i].is_null]
        if not dead:
            return 0
        freed = [blocks[i] for i in dead]
        for i in dead:
            blocks[i] = self.pool.null_block
        self.pool.free_blocks(reversed(freed))
        self.holes.setdefault(req_id, []).extend(dead)
        self.pages_freed += len(dead)
        return len(dead)

    def _refill(self, req_id: str) -> bool:
        holes = self.holes[req_id]
        if self.pool.get_num_free_blocks() < len(holes):
            return False
        blocks = self._blocks[req_id]
        for i, block in zip(holes, self.pool.get_new_blocks(len(holes))):
            blocks[i] = block
        del self.holes[req_id]
        self.refilled.add(req_id)
        return True

    def send_refilled(self, output) -> None:
        """Give the worker each refilled request's whole block list, to replace its row."""
        if not self.refilled:
            return
        cached = output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            if req_id in self.refilled:
                cached.new_block_ids[i] = self.manager.get_block_ids(req_id)
                cached.resumed_req_ids.add(req_id)
        self.refilled.clear()

    def forget(self, req_id: str) -> None:
        """The request's blocks are freed (finished or preempted): vLLM skips the null ones."""
        self.holes.pop(req_id, None)
        self.refilled.discard(req_id)
