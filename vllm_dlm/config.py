"""Decoding knobs: per request through `SamplingParams.extra_args` (OpenAI `extra_body`), server-wide
defaults through vLLM's `--additional-config '{"dlm": {...}}'`.

Validation happens once, at request admission (`compat.request_validation`), and raises
`ValueError` naming the parameter; vLLM's OpenAI server turns that into HTTP 400. The worker calls
the same `resolve_decoding_params` again to build the request's decoding state, so what is checked is
exactly what runs.
"""

from dataclasses import dataclass

# Remasking rules each model family's official generate code implements. `low_confidence` and
# `random` are LLaDA's; `maskgit_plus`, `topk_margin`, `entropy`, `origin` are Dream's `alg`.
REMASKING = {
    "llada": ("low_confidence", "random"),
    "dream": ("maskgit_plus", "topk_margin", "entropy", "origin"),
}
DEFAULT_REMASKING = {"llada": "low_confidence", "dream": "entropy"}
CACHE_MODES = ("none", "prefix", "dual")
# Remasking rules whose confidence is a probability-like score in [0, 1] (threshold decoding).
THRESHOLD_REMASKING = ("low_confidence", "maskgit_plus", "topk_margin")
DEFAULT_BLOCK_LENGTH = 32
DEFAULT_MAX_GEN_LEN = 1024

# knob -> accepted Python types (bool is rejected for numbers explicitly).
REQUEST_KNOBS = {
    "steps": (int,),
    "block_length": (int,),
    "remasking": (str,),
    "alg_temp": (int, float),
    "cache": (str,),
    "threshold": (int, float),
    # SparseD (active with --attention-backend sparsed)
    "skip": (int, float),
    "select": (int, float),
    "block_size": (int,),
    "isolated": (bool,),
    # Sparse-dLLM eviction (with --attention-backend sparsed, cache "dual")
    "keep_ratio": (int, float),
    "kernel_size": (int,),
    "evict_delay": (int,),
    "evict_pass": (str,),
    "evict_unit": (str,),
}
SPARSED_KNOBS = ("skip", "select", "block_size", "isolated", "keep_ratio", "kernel_size", "evict_delay",
                 "evict_pass", "evict_unit")
EVICT_PASSES = ("full", "cached")
EVICT_UNITS = ("token", "page")
MAX_SPARSED_BLOCK_SIZE = 1024
# extra_args keys vLLM itself puts there (disaggregated prefill); passed through, not ours.
VLLM_EXTRA_ARGS = ("kv_transfer_params", "ec_transfer_params")
# Server-only knobs (in additional_config["dlm"]).
SERVER_KNOBS = {"max_gen_len": (int,)}


@dataclass(frozen=True)
class SparseDParams:
    """SparseD knobs (paper defaults): full attention up to and including the switch step
    int(skip * steps) + 1 (SparseD's code); there each layer keeps, per head and query block, the
    top `select` fraction of key blocks of `block_size` positions (prompt and generated blocks
    ranked apart if `isolated`); the masks are reused for every later step."""

    skip: float = 0.2
    select: float = 0.3
    block_size: int = 128
    isolated: bool = True

    def switch_step(self, steps: int) -> int | None:
        """0-based step at which masks are computed; None when no later step would use them."""
        switch = int(self.skip * steps) + 1
        if self.select >= 1.0 or switch >= steps - 1:
            return None
        return switch


@dataclass(frozen=True)
class EvictionParams:
    """Sparse-dLLM knobs (paper defaults apart from keep_ratio, which is off unless < 1): in each
    block the first `evict_delay` + 1 steps are full passes; the last of them scores every cached
    prefix/suffix token by the block's mean query against its key (averaged over heads), max-pools
    the scores over `kernel_size` neighbours, and keeps the top `keep_ratio` of them per layer; the
    block's later (dual-cache) steps attend to the kept tokens and the block only.

    Two choices beyond the paper (defaults = the paper):
      evict_pass  "full": the selecting step is a full pass (Sparse-dLLM). "cached": only the
                  block's refresh is a full pass; the selecting step is a dual-cache step whose
                  block queries are scored against the cached keys (no second full pass per block).
      evict_unit  "token": keep tokens (Sparse-dLLM). "page": keep whole KV-cache pages (vLLM
                  blocks), ranked by their best pooled token score, the block's pages always kept
                  and int(candidate pages * keep_ratio) of the others; later steps then run on
                  FlashAttention-3 with a per-layer block table of the kept pages (Hopper)."""

    keep_ratio: float = 1.0
    kernel_size: int = 3
    evict_delay: int = 1
    evict_pass: str = "full"
    evict_unit: str = "token"

    @property
    def enabled(self) -> bool:
        return self.keep_ratio < 1.0

    def is_full_pass(self, step_in_block: int) -> bool:
        """Whether this step of a block (dual cache) is a full pass: the refresh (step 0), and with
        full selection passes the steps up to the selecting one."""
        if step_in_block == 0:
            return True
        return self.enabled and self.evict_pass == "full" and step_in_block <= self.evict_delay


@dataclass(frozen=True)
class DecodingParams:
    """Everything one request's denoising loop needs, resolved and validated.

    `gen_length` is `max_tokens`: the number of masked positions appended to the prompt.
    """

    family: str
    gen_length: int
    steps: int
    block_length: int
    remasking: str
    alg_temp: float
    cache: str
    threshold: float | None
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    sparsed: "SparseDParams"
    eviction: "EvictionParams"

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks


@dataclass(frozen=True)
class ServerDefaults:
    """Server-wide defaults for the request knobs (None: derive per request)."""

    steps: int | None = None
    block_length: int | None = None
    remasking: str | None = None
    alg_temp: float = 0.0
    cache: str = "none"
    threshold: float | None = None
    max_gen_len: int = DEFAULT_MAX_GEN_LEN
    skip: float | None = None
    select: float | None = None
    block_size: int | None = None
    isolated: bool | None = None
    keep_ratio: float | None = None
    kernel_size: int | None = None
    evict_delay: int | None = None
    evict_pass: str | None = None
    evict_unit: str | None = None


def _check_type(where: str, name: str, value, types) -> None:
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise ValueError(f"{where}[{name!r}] must be {names}, got {value!r}")


def parse_server_defaults(additional_config: dict | None) -> ServerDefaults:
    """Read `additional_config["dlm"]`; unknown keys or wrong types raise ValueError."""
    section = (additional_config or {}).get("dlm", {})
    if not isinstance(section, dict):
        raise ValueError(f"additional_config['dlm'] must be a dict, got {section!r}")
    allowed = {**REQUEST_KNOBS, **SERVER_KNOBS}
    for name, value in section.items():
        if name not in allowed:
            raise ValueError(
                f"additional_config['dlm'] has unknown key {name!r}; known: {sorted(allowed)}"
            )
        if value is not None:
            _check_type("additional_config['dlm']", name, value, allowed[name])
    defaults = ServerDefaults(**section)
    if defaults.max_gen_len < 1:
        raise ValueError("additional_config['dlm']['max_gen_len'] must be >= 1")
    return defaults


def resolve_decoding_params(
    family: str,
    *,
    max_tokens: int | None,
    extra_args: dict | None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    defaults: ServerDefaults = ServerDefaults(),
) -> DecodingParams:
    """Merge request knobs over server defaults and validate them; errors name the parameter."""
    args = {k: v for k, v in (extra_args or {}).items() if k not in VLLM_EXTRA_ARGS}
    for name, value in args.items():
        if name not in REQUEST_KNOBS:
            raise ValueError(
                f"extra_args has unknown key {name!r}; diffusion knobs are {sorted(REQUEST_KNOBS)}"
            )
        _check_type("extra_args", name, value, REQUEST_KNOBS[name])

    if max_tokens is None or max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 for diffusion decoding, got {max_tokens!r}")
    if max_tokens > defaults.max_gen_len:
        raise ValueError(
            f"max_tokens={max_tokens} exceeds this server's diffusion canvas "
            f"(additional_config['dlm']['max_gen_len']={defaults.max_gen_len})"
        )
    gen_length = max_tokens

    remasking = args.get("remasking", defaults.remasking) or DEFAULT_REMASKING[family]
    if remasking not in REMASKING[family]:
        raise ValueError(
            f"remasking={remasking!r} is not supported for {family}; choose one of {REMASKING[family]}"
        )

    block_length = args.get("block_length", defaults.block_length)
    if block_length is None:
        # LLaDA's generate is semi-autoregressive; Dream's diffusion_generate is one block.
        block_length = min(DEFAULT_BLOCK_LENGTH, gen_length) if family == "llada" else gen_length
        if gen_length % block_length:
            raise ValueError(
                f"block_length: the default min({DEFAULT_BLOCK_LENGTH}, max_tokens)={block_length} "
                f"does not divide max_tokens={gen_length}; pass extra_args['block_length']"
            )
    if block_length < 1:
        raise ValueError(f"block_length must be >= 1, got {block_length}")
    if gen_length % block_length:
        raise ValueError(f"block_length={block_length} must divide max_tokens={gen_length}")

    steps = args.get("steps", defaults.steps)
    if steps is None:
        steps = gen_length
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise ValueError(
            f"steps={steps} must be divisible by the number of blocks "
            f"(max_tokens/block_length = {num_blocks})"
        )

    alg_temp = float(args.get("alg_temp", defaults.alg_temp))
    if alg_temp < 0:
        raise ValueError(f"alg_temp must be >= 0, got {alg_temp}")
    if alg_temp > 0 and family != "dream":
        raise ValueError("alg_temp applies to Dream's remasking only")

    cache = args.get("cache", defaults.cache)
    if cache not in CACHE_MODES:
        raise ValueError(f"cache={cache!r} is unknown; choose one of {CACHE_MODES}")
    if cache != "none" and family == "dream":
        # Dream reads position i's logits from hidden state i-1; on a cached step the state before
        # the block is in the KV cache, not recomputed.
        raise ValueError(f"cache={cache!r} is not supported for Dream (shifted logits); use 'none'")

    threshold = args.get("threshold", defaults.threshold)
    if threshold is not None:
        threshold = float(threshold)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if remasking not in THRESHOLD_REMASKING:
            raise ValueError(
                f"threshold needs a probability-like confidence; remasking={remasking!r} has none "
                f"(use one of {THRESHOLD_REMASKING})"
            )

    sparsed = _resolve_sparsed(args, defaults)
    eviction = _resolve_eviction(args, defaults)
    if eviction.enabled and cache != "dual":
        raise ValueError(
            f"keep_ratio={eviction.keep_ratio} (Sparse-dLLM eviction) needs cache='dual', got cache={cache!r}"
        )

    return DecodingParams(
        family=family,
        gen_length=gen_length,
        steps=steps,
        block_length=block_length,
        remasking=remasking,
        alg_temp=alg_temp,
        cache=cache,
        threshold=threshold,
        temperature=float(temperature),
        top_p=float(top_p),
        top_k=int(top_k),
        seed=seed,
        sparsed=sparsed,
        eviction=eviction,
    )


def _pick(args: dict, defaults: ServerDefaults, base, name: str):
    """A knob from the request, else the server default, else the dataclass default."""
    value = args.get(name, getattr(defaults, name))
    return getattr(base, name) if value is None else value


def _resolve_eviction(args: dict, defaults: ServerDefaults) -> EvictionParams:
    keep_ratio, kernel_size, evict_delay, evict_pass, evict_unit = (
        _pick(args, defaults, EvictionParams, n)
        for n in ("keep_ratio", "kernel_size", "evict_delay", "evict_pass", "evict_unit")
    )
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size}")
    if evict_delay < 0:
        raise ValueError(f"evict_delay must be >= 0, got {evict_delay}")
    if evict_pass not in EVICT_PASSES:
        raise ValueError(f"evict_pass must be one of {EVICT_PASSES}, got {evict_pass!r}")
    if evict_unit not in EVICT_UNITS:
        raise ValueError(f"evict_unit must be one of {EVICT_UNITS}, got {evict_unit!r}")
    return EvictionParams(float(keep_ratio), int(kernel_size), int(evict_delay), evict_pass, evict_unit)


def _resolve_sparsed(args: dict, defaults: ServerDefaults) -> SparseDParams:
    skip, select, block_size, isolated = (
        _pick(args, defaults, SparseDParams, n) for n in ("skip", "select", "block_size", "isolated")
    )
    if not 0.0 <= skip <= 1.0:
        raise ValueError(f"skip must be in [0, 1], got {skip}")
    if not 0.0 < select <= 1.0:
        raise ValueError(f"select must be in (0, 1], got {select}")
    if not 16 <= block_size <= MAX_SPARSED_BLOCK_SIZE or block_size & (block_size - 1):
        raise ValueError(
            f"block_size must be a power of two in [16, {MAX_SPARSED_BLOCK_SIZE}], got {block_size}"
        )
    return SparseDParams(float(skip), float(select), int(block_size), bool(isolated))

