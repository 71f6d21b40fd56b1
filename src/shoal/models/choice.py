"""Which variant of a model to run on this machine, and how: the resolver's policy.

:func:`choose_variant` is a pure function of a catalog entry, a
:class:`~shoal.hardware.Hardware` snapshot and a few wishes. It returns a :class:`Choice`: the
variant, where it runs (``n_gpu_layers``: ``-1`` all layers on the GPU, ``k`` partial, ``0``
CPU only), ``n_threads``, ``n_ctx``, the memory it is expected to take, the reasons for each
decision in plain words, and every variant it passed over with why. When nothing fits it
raises :class:`~shoal.exceptions.MemoryBudgetError` listing what each variant would need and,
given ``alternatives``, which other models would fit.

The policy (also a table in ``docs/models.md``):

1. Only GGUF variants run in the embedded engine; ONNX ones are Foundry Local's.
2. The context is the one asked for, else :data:`DEFAULT_CONTEXT`, never more than the model
   was trained on; when a variant does not fit, its context is halved down to
   :data:`MIN_CONTEXT` before it is given up.
3. Placement, per variant: with a usable GPU (found, and the engine built with a GPU backend)
   all layers go to it if weights, KV cache and buffers fit its free memory less a reserve;
   on NVIDIA, otherwise as many whole layers as fit (partial offload) with the rest on the
   CPU; otherwise the CPU. Apple's GPU shares system memory: all layers or none, within the
   share Metal lets the GPU use.
4. Ranking: installed before not installed; among variants to fetch, those whose sha256 the
   catalog records (files shipped on PyPI) first; then the full context before a reduced one; then
   whole model on a GPU, partial, CPU; then the quantization: on a GPU holding the whole
   model the highest quality (``Q8_0`` over ``Q4_K_M``); otherwise ``Q4_K_M`` first, since
   decoding on a CPU is bound by memory bandwidth and a 4-bit K-quant reads the fewest bytes
   per token for its quality (:data:`CPU_PREFERENCE`).
5. Tight memory: when the pick would take more than :data:`TIGHT_FRACTION` of the memory it
   draws on, the smallest variant of the same rank that fits is taken instead.
6. Threads: one per physical core the process may use, at most :data:`MAX_THREADS`
   (hyper-threads do not speed up decoding, and many threads contend for memory bandwidth).

All memory figures are estimates (:func:`~shoal.hardware.estimate_model_memory`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from shoal.exceptions import MemoryBudgetError, UserError
from shoal.hardware import GPU, Hardware, estimate_model_memory
from shoal.models.catalog import CatalogEntry, Variant

__all__ = [
    "CPU_PREFERENCE",
    "DEFAULT_CONTEXT",
    "MAX_THREADS",
    "MIN_CONTEXT",
    "QUALITY",
    "TIGHT_FRACTION",
    "Choice",
    "Rejected",
    "choose_variant",
    "gpu_layers_for_file",
    "usable_gpu",
]

#: context used when none is asked for (the embedded engine's own default, too)
DEFAULT_CONTEXT = 4096
#: the smallest context a variant is tried at before it is said not to fit
MIN_CONTEXT = 1024
MAX_THREADS = 16
#: VRAM kept free on an NVIDIA GPU for the CUDA context and cuBLAS workspace (MB)
VRAM_RESERVE_MB = 300
#: host memory a fully offloaded model still takes: host buffers, tokenizer, the process (MB)
HOST_OVERHEAD_MB = 250
#: share of unified memory Metal lets the GPU use (macOS's recommended working set)
METAL_SHARE = 0.75
#: above this share of the memory it draws on, a pick counts as tight
TIGHT_FRACTION = 0.8

#: quantizations, best quality first (the order on a GPU that holds the whole model)
QUALITY: tuple[str, ...] = (
    "F16", "BF16", "F32", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M",
    "Q4_K_S", "Q4_1", "IQ4_XS", "IQ4_NL", "Q4_0", "Q3_K_L", "Q3_K_M", "IQ3_M", "Q3_K_S",
    "IQ3_XS", "Q2_K", "IQ2_M", "IQ2_XS",
)  # fmt: skip
#: the order on a CPU (and with partial offload): 4-bit first, then more bits, then fewer
CPU_PREFERENCE: tuple[str, ...] = (
    "Q4_K_M", "Q4_K_S", "Q4_1", "IQ4_XS", "IQ4_NL", "Q4_0", "Q5_K_M", "Q5_K_S", "Q5_1",
    "Q5_0", "Q6_K", "Q8_0", "Q3_K_L", "Q3_K_M", "IQ3_M", "Q3_K_S", "IQ3_XS", "Q2_K", "IQ2_M",
    "IQ2_XS", "F16", "BF16", "F32",
)  # fmt: skip


@dataclass(frozen=True)
class Rejected:
    """A variant the resolver passed over, and why."""

    variant: str
    reason: str


@dataclass(frozen=True)
class Choice:
    """What to load and how. ``memory_mb`` is host memory (all of it on unified memory),
    ``gpu_memory_mb`` what goes to a discrete GPU."""

    alias: str
    variant: Variant
    device: str  # "cpu", "cuda", "metal"
    n_gpu_layers: int
    n_threads: int
    n_ctx: int
    memory_mb: int
    gpu_memory_mb: int
    installed: bool
    reasons: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def placement(self) -> str:
        """``"CPU"``, ``"GPU (cuda)"`` or ``"GPU (cuda) for 12 layers, CPU for the rest"``."""
        if self.n_gpu_layers == 0:
            return "CPU"
        if self.n_gpu_layers < 0:
            return f"GPU ({self.device})"
        return f"GPU ({self.device}) for {self.n_gpu_layers} layers, CPU for the rest"

    def summary(self) -> str:
        """``Q4_K_M on CPU, ctx 4096, ~700 MB``."""
        gpu = f" + ~{self.gpu_memory_mb} MB GPU" if self.device == "cuda" else ""
        return (
            f"{self.variant.quant} on {self.placement}, ctx {self.n_ctx}, ~{self.memory_mb} MB{gpu}"
        )


@dataclass(frozen=True)
class _Plan:
    variant: Variant
    device: str
    n_gpu_layers: int
    n_ctx: int
    host_mb: int
    gpu_mb: int
    installed: bool
    reduced: bool
    where: str  # why this device, in words

    @property
    def placement_rank(self) -> int:
        if self.device == "cpu":
            return 2
        return 1 if self.n_gpu_layers > 0 else 0

    @property
    def full_gpu(self) -> bool:
        return self.device != "cpu" and self.n_gpu_layers < 0

    def quant_rank(self) -> int:
        order = QUALITY if self.full_gpu else CPU_PREFERENCE
        quant = self.variant.quant.upper()
        return order.index(quant) if quant in order else len(order)

    @property
    def unverified(self) -> bool:
        """Not installed, and no sha256 recorded to check a download against."""
        return not self.installed and self.variant.sha256 is None

    def tier(self) -> tuple[bool, bool, bool, int]:
        return (not self.installed, self.unverified, self.reduced, self.placement_rank)

    def key(self) -> tuple[bool, bool, bool, int, int, int]:
        return (*self.tier(), self.quant_rank(), self.host_mb)


def usable_gpu(hardware: Hardware, gpu_offload: bool) -> GPU | None:
    """The GPU layers would go to: the NVIDIA card with the most free memory, else Apple's
    GPU; ``None`` without one or when the engine cannot offload."""
    if not gpu_offload:
        return None
    cuda = [g for g in hardware.gpus if g.kind == "cuda"]
    if cuda:
        return max(cuda, key=lambda g: g.usable_mb)
    metal = [g for g in hardware.gpus if g.kind == "metal"]
    return metal[0] if metal else None


def _threads(hardware: Hardware) -> tuple[int, str]:
    cores = hardware.physical_cores
    why = f"one per physical core ({cores})"
    if hardware.usable_cores is not None and hardware.usable_cores < cores:
        cores = hardware.usable_cores
        why = f"one per core this process may use ({cores} of {hardware.physical_cores})"
    if cores > MAX_THREADS:
        return MAX_THREADS, f"{why}, capped at {MAX_THREADS}: more threads contend for memory"
    return max(1, cores), f"{why}; hyper-threads do not speed up decoding"


def _contexts(target: int) -> list[int]:
    sizes = [target]
    while sizes[-1] // 2 >= MIN_CONTEXT:
        sizes.append(sizes[-1] // 2)
    return sizes


def _need(entry: CatalogEntry, variant: Variant, n_ctx: int) -> int:
    kv = entry.shape.kv_bytes_per_token if entry.shape else None
    return estimate_model_memory(variant.size or 0, n_ctx, kv_bytes_per_token=kv)


def _place(
    entry: CatalogEntry,
    variant: Variant,
    n_ctx: int,
    *,
    hardware: Hardware,
    gpu: GPU | None,
    budget_mb: int,
    installed: bool,
    reduced: bool,
) -> _Plan | None:
    total = _need(entry, variant, n_ctx)

    def plan(device: str, layers: int, host: int, vram: int, where: str) -> _Plan:
        return _Plan(variant, device, layers, n_ctx, host, vram, installed, reduced, where)

    if gpu is not None and gpu.kind == "cuda" and "cuda" in variant.run_devices:
        vram = gpu.usable_mb - VRAM_RESERVE_MB
        free = "free" if gpu.memory_free_mb is not None else "total"
        if total <= vram and budget_mb >= HOST_OVERHEAD_MB:
            return plan(
                "cuda",
                -1,
                HOST_OVERHEAD_MB,
                total,
                f"all layers on {gpu.name} (CUDA): ~{total} MB of its {gpu.usable_mb} MB {free}",
            )
        if entry.shape is not None:
            layers = entry.shape.layers
            fixed = _buffers_mb(n_ctx)
            per_layer = max(1e-6, (total - fixed) / layers)
            on_gpu = min(layers - 1, math.floor((vram - fixed) / per_layer))
            host = math.ceil(total - on_gpu * per_layer)
            if on_gpu >= 1 and host <= budget_mb:
                return plan(
                    "cuda",
                    on_gpu,
                    host,
                    math.ceil(fixed + on_gpu * per_layer),
                    f"{on_gpu} of {layers} layers on {gpu.name} (CUDA), the rest on the CPU: "
                    f"the whole model (~{total} MB) does not fit its {gpu.usable_mb} MB {free}",
                )
    if gpu is not None and gpu.kind == "metal" and "metal" in variant.run_devices:
        limit = min(budget_mb, int(hardware.memory_total_mb * METAL_SHARE))
        if total <= limit:
            return plan(
                "metal",
                -1,
                total,
                0,
                f"all layers on the Apple GPU (Metal, unified memory): ~{total} MB of {limit} MB",
            )
    if total <= budget_mb:
        return plan("cpu", 0, total, 0, _cpu_why(hardware, gpu, total, budget_mb))
    return None


def _buffers_mb(n_ctx: int) -> int:
    """Compute and scratch buffers, which stay whole wherever the layers go (MB)."""
    return estimate_model_memory(0, n_ctx, kv_bytes_per_token=0)


def _cpu_why(hardware: Hardware, gpu: GPU | None, total: int, budget: int) -> str:
    memory = f"~{total} MB of {budget} MB available"
    if gpu is not None:
        return f"on the CPU: the model does not fit the GPU ({gpu.name}); {memory}"
    if any(g.kind == "cuda" for g in hardware.gpus) or any(
        g.kind == "metal" for g in hardware.gpus
    ):
        if hardware.gpu_offload_supported is False:
            names = ", ".join(g.name for g in hardware.gpus)
            return (
                f"on the CPU: this llama.cpp build has no GPU backend, so {names} goes unused "
                f"(reinstall llama-cpp-python with CUDA or Metal enabled); {memory}"
            )
        return f"on the CPU: GPU offload not enabled; {memory}"
    return f"on the CPU: no GPU found; {memory}"


def _budget(hardware: Hardware, max_memory_mb: int | None) -> tuple[int, str]:
    available = hardware.memory_available_mb
    if max_memory_mb is not None and max_memory_mb < available:
        return max_memory_mb, f"the {max_memory_mb} MB memory budget"
    return available, f"{available} MB of memory available"


def _plan_variant(
    entry: CatalogEntry,
    variant: Variant,
    target: int,
    *,
    hardware: Hardware,
    gpu: GPU | None,
    budget_mb: int,
    installed: bool,
) -> _Plan | str:
    """The variant placed at the largest context that fits, else why it does not fit."""
    for n_ctx in _contexts(target):
        found = _place(
            entry,
            variant,
            n_ctx,
            hardware=hardware,
            gpu=gpu,
            budget_mb=budget_mb,
            installed=installed,
            reduced=n_ctx < target,
        )
        if found is not None:
            return found
    smallest = _contexts(target)[-1]
    return f"needs ~{_need(entry, variant, smallest)} MB even at context {smallest}"


def choose_variant(
    entry: CatalogEntry,
    hardware: Hardware,
    *,
    variant: str | None = None,
    max_memory_mb: int | None = None,
    context: int | None = None,
    gpu_offload: bool = False,
    installed: Iterable[str] = (),
    alternatives: Iterable[CatalogEntry] = (),
) -> Choice:
    """The variant of ``entry`` to run on ``hardware`` and how (see the module docstring).

    ``variant`` restricts the choice to one variant id (or quant name); ``installed`` names the
    variants on this machine; ``gpu_offload`` says the engine can use a GPU; ``alternatives``
    are other entries to suggest when nothing fits. Raises :class:`UnknownModelError` for an
    unknown variant, :class:`UserError` for one the embedded engine cannot run, and
    :class:`MemoryBudgetError` when nothing fits.
    """
    have = {v.lower() for v in installed}
    budget, budget_text = _budget(hardware, max_memory_mb)
    gpu = usable_gpu(hardware, gpu_offload)
    rejected: list[Rejected] = []

    if variant is not None:
        wanted = entry.variant(variant)
        if not wanted.runnable:
            raise UserError(
                f"{entry.alias}:{wanted.id} is a {wanted.format.upper()} build that only "
                f"Foundry Local runs (foundry model run {_foundry(entry, wanted)}); the embedded "
                f"engine runs: {', '.join(v.id for v in entry.runnable_variants) or 'none'}"
            )
        candidates = [wanted]
    else:
        candidates = list(entry.runnable_variants)
        for v in entry.variants:
            if not v.runnable:
                where = f"foundry model run {_foundry(entry, v)}"
                rejected.append(Rejected(v.id, f"{v.format.upper()}, Foundry Local only ({where})"))

    trained = entry.context_length
    asked = context or DEFAULT_CONTEXT
    target = min(asked, trained)
    plans: list[_Plan] = []
    for v in candidates:
        found = _plan_variant(
            entry,
            v,
            target,
            hardware=hardware,
            gpu=gpu,
            budget_mb=budget,
            installed=v.id in have,
        )
        if isinstance(found, str):
            rejected.append(Rejected(v.id, f"does not fit: {found} ({budget_text})"))
        else:
            plans.append(found)
    if not plans:
        raise MemoryBudgetError(
            _nothing_fits(
                entry,
                rejected,
                budget_text,
                list(alternatives),
                hardware=hardware,
                gpu_offload=gpu_offload,
                max_memory_mb=max_memory_mb,
            )
        )

    plans.sort(key=_Plan.key)
    best = plans[0]
    reasons: list[str] = []
    tight = _tight(best, plans, budget)
    if tight is not None:
        smaller, share = tight
        reasons.append(
            f"{smaller.variant.quant}: memory is tight ({best.variant.quant} would take "
            f"{share:.0%} of the {budget} MB available), so the smallest variant that fits"
        )
        best = smaller
    else:
        reasons.append(_why_quant(best, plans, explicit=variant is not None))
    if not best.installed and have:
        reasons.append(
            f"not installed, and no installed variant ({', '.join(sorted(have))}) fits: "
            f"shoal models pull {entry.alias}:{best.variant.id}"
        )
    reasons.append(best.where)
    threads, why_threads = _threads(hardware)
    reasons.append(f"{threads} threads: {why_threads}")
    reasons.append(_why_context(best, asked=context, target=target, trained=trained))

    for p in plans:
        if p is not best:
            rejected.append(Rejected(p.variant.id, _why_not(p, best, tight=tight is not None)))
    order = [v.id for v in entry.variants]
    rejected.sort(key=lambda r: order.index(r.variant) if r.variant in order else len(order))
    return Choice(
        alias=entry.alias,
        variant=best.variant,
        device=best.device,
        n_gpu_layers=best.n_gpu_layers,
        n_threads=threads,
        n_ctx=best.n_ctx,
        memory_mb=best.host_mb,
        gpu_memory_mb=best.gpu_mb,
        installed=best.installed,
        reasons=reasons,
        rejected=rejected,
    )


def _foundry(entry: CatalogEntry, variant: Variant) -> str:
    source = variant.sources.foundry
    return source.alias if source else (entry.foundry or entry.alias)


def _tight(best: _Plan, plans: list[_Plan], budget: int) -> tuple[_Plan, float] | None:
    """A smaller plan of the same tier when ``best`` would crowd the memory it draws on."""
    if best.device == "cuda" and best.n_gpu_layers < 0:
        return None  # host memory barely used; VRAM was checked with its reserve
    share = best.host_mb / budget if budget > 0 else 1.0
    if share <= TIGHT_FRACTION:
        return None
    same = [p for p in plans if p.tier() == best.tier()]
    smallest = min(same, key=lambda p: p.host_mb)
    if smallest is best or smallest.host_mb >= best.host_mb:
        return None
    return smallest, share


def _why_quant(best: _Plan, plans: list[_Plan], *, explicit: bool) -> str:
    quant = best.variant.quant
    if explicit:
        return f"{quant}: the variant asked for"
    if len(plans) == 1:
        return f"{quant}: the only variant that runs here"
    if best.installed and sum(p.installed for p in plans) == 1:
        return f"{quant}: the installed variant (installed ones come first)"
    if not best.unverified and any(p.unverified for p in plans):
        return (
            f"{quant}: nothing is installed, and a variant whose checksum Shoal records comes first"
        )
    if best.full_gpu:
        return (
            f"{quant}: the GPU holds the whole model, so the highest-quality variant that fits it"
        )
    return (
        f"{quant}: on a CPU decoding speed is bound by memory bandwidth, and "
        f"{'Q4_K_M' if quant.upper() == 'Q4_K_M' else 'the nearest to Q4_K_M'} reads the "
        f"fewest bytes per token for good quality"
    )


def _why_not(plan: _Plan, best: _Plan, *, tight: bool) -> str:
    size = f"~{plan.host_mb} MB" if plan.device != "cuda" else f"~{plan.gpu_mb} MB on the GPU"
    fits = f"fits ({plan.variant.quant}, {size})"
    if best.installed and not plan.installed:
        return f"{fits}, but not installed ({best.variant.id} is)"
    if plan.unverified and not best.unverified:
        return f"{fits}, but no checksum recorded for it ({best.variant.id} has one)"
    if plan.reduced and not best.reduced:
        return f"{fits} only with the context cut to {plan.n_ctx}"
    if plan.placement_rank > best.placement_rank:
        return f"{fits}, but not wholly on the GPU ({best.variant.id} is)"
    if tight:
        return f"{fits}, but memory is tight and {best.variant.quant} is smaller"
    if best.full_gpu:
        return f"{fits}, but {best.variant.quant} is higher quality and also fits the GPU"
    if plan.host_mb > best.host_mb:
        return f"{fits}, but {best.variant.quant} is faster on a CPU (fewer bytes per token)"
    return f"{fits}, but {best.variant.quant} keeps more quality and fits too"


def _why_context(best: _Plan, *, asked: int | None, target: int, trained: int) -> str:
    n = best.n_ctx
    if best.reduced:
        return (
            f"context {n} tokens: cut from {target} so the model fits memory "
            f"(each token of context reserves KV-cache memory)"
        )
    if asked is None:
        if trained <= DEFAULT_CONTEXT:
            return f"context {n} tokens: all the model was trained on"
        return (
            f"context {n} tokens: the default; the model was trained on {trained}, but a "
            f"longer context reserves more memory (ask for more with a context setting)"
        )
    if asked > trained:
        return f"context {n} tokens: {asked} was asked, but the model was trained on {trained}"
    return f"context {n} tokens: as asked"


def _nothing_fits(
    entry: CatalogEntry,
    rejected: list[Rejected],
    budget_text: str,
    alternatives: list[CatalogEntry],
    *,
    hardware: Hardware,
    gpu_offload: bool,
    max_memory_mb: int | None,
) -> str:
    needs = [
        f"{r.variant} {r.reason.removeprefix('does not fit: ').rpartition(' (')[0]}"
        for r in rejected
        if r.reason.startswith("does not fit: ")
    ]
    message = f"no variant of {entry.alias} fits {budget_text}: {'; '.join(needs)}"
    fitting = []
    for other in alternatives:
        if other.alias == entry.alias or not other.runnable_variants:
            continue
        try:
            choice = choose_variant(
                other, hardware, max_memory_mb=max_memory_mb, gpu_offload=gpu_offload
            )
        except (MemoryBudgetError, UserError):
            continue
        fitting.append(f"{other.alias} ({choice.variant.quant}, ~{choice.memory_mb} MB)")
    if fitting:
        message += f"; models that fit: {', '.join(fitting)}"
    elif alternatives:
        message += "; no model in the catalog fits: free some memory"
    return message


def gpu_layers_for_file(
    size: int, hardware: Hardware, *, gpu_offload: bool, context: int = DEFAULT_CONTEXT
) -> int:
    """``n_gpu_layers`` for a bare ``.gguf`` file (no catalog entry, shape unknown): ``-1``
    when a usable GPU holds the whole file, else ``0`` (no partial offload without a layer
    count)."""
    gpu = usable_gpu(hardware, gpu_offload)
    if gpu is None:
        return 0
    need = estimate_model_memory(size, context)
    if gpu.kind == "metal":
        limit = min(hardware.memory_available_mb, int(hardware.memory_total_mb * METAL_SHARE))
        return -1 if need <= limit else 0
    return -1 if need <= gpu.usable_mb - VRAM_RESERVE_MB else 0
