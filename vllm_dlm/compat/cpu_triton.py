"""CPU mode: run Model Runner V2 (and our Triton kernels) on CPU through Triton's interpreter.

Why: LLaDA/Dream need Model Runner V2 (its ModelState hooks and draft-token path); vLLM forces it
for diffusion models, and V2's input preparation is written in Triton. On the CPU platform vLLM's
`HAS_TRITON` gate (vllm/triton_utils/importing.py) says False (no active GPU driver, no Triton CPU
backend) and swaps `triton`/`tl` for placeholders. With `TRITON_INTERPRET=1`, stock Triton runs
those kernels with NumPy on CPU tensors, so here we set that variable and point vLLM's Triton
handles back at the real modules. Triton reads the variable when it is first imported, which in the
process that loads the plugin first has already happened; vLLM's engine-core and worker processes
are started after it and inherit it, and they are where kernels run. (Calling our kernels directly
in a CPU process needs TRITON_INTERPRET=1 in the environment from the start, as tests/conftest.py
sets it.) This must run before vLLM imports the V2 runner (it does: the plugin is loaded before the
worker builds its model runner). GPU platforms are left untouched.

Breaks if: vLLM moves `HAS_TRITON`/`triton`/`tl` out of `vllm.triton_utils`, or imports V2 runner
modules before general plugins load.
"""

import os
import sys

from vllm.logger import init_logger

logger = init_logger(f"vllm.dlm.{__name__}")


def enable_if_cpu() -> None:
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    os.environ.setdefault("TRITON_INTERPRET", "1")
    import triton
    import triton.language as tl

    import vllm.triton_utils as triton_utils

    if triton_utils.HAS_TRITON and triton_utils.triton is triton:
        return
    # vLLM modules copy these names at import (`from vllm.triton_utils import HAS_TRITON, tl,
    # triton`); fix every copy already made. Modules imported later read the fixed originals.
    placeholders = (triton_utils.triton, triton_utils.tl)
    for name, module in list(sys.modules.items()):
        if not name.startswith("vllm") or module is None:
            continue
        if getattr(module, "HAS_TRITON", None) is False:
            module.HAS_TRITON = True
        if getattr(module, "triton", None) is placeholders[0]:
            module.triton = triton
        if getattr(module, "tl", None) is placeholders[1]:
            module.tl = tl
    logger.info("vllm-dlm: CPU mode, Triton kernels run under TRITON_INTERPRET=1")
