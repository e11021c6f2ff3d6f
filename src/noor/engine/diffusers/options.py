"""Memory and speed options for a diffusers pipeline: each opt-in, attached from outside, and reversible.

Offload is chosen when the model is loaded; VAE tiling/slicing, the attention backend and the cache
can be switched on and off on a loaded pipeline (`apply` then `apply` again with other options).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DTYPES = ("bfloat16", "float16", "float32")
OFFLOADS = ("none", "model", "sequential", "group")


def cache_kinds() -> dict[str, str]:
    """Noor's cache names -> the diffusers config class, for the caches this diffusers has."""
    import diffusers

    known = {
        "first-block": "FirstBlockCacheConfig",  # ParaAttention's First Block Cache
        "faster": "FasterCacheConfig",  # FasterCache (Lv et al. 2024)
        "pab": "PyramidAttentionBroadcastConfig",  # Pyramid Attention Broadcast (Zhao et al. 2024)
        "taylorseer": "TaylorSeerCacheConfig",  # TaylorSeer (Liu et al. 2025)
    }
    return {name: cls for name, cls in known.items() if hasattr(diffusers, cls)}


@dataclass(frozen=True)
class Options:
    offload: str = "none"  # model: whole components to the GPU in turn; sequential: layer by layer; group: blocks
    vae_tiling: bool = False
    vae_slicing: bool = False
    attention: str = ""  # a diffusers attention backend ("native", "flash", "sage", ...); "" = the default
    cache: str = "none"  # see cache_kinds()
    cache_threshold: float = (
        0.05  # First Block Cache: relative change of the first block's residual below which it reuses
    )

    def check(self, device: str) -> None:
        """Raise ValueError naming the option and value this machine or this diffusers cannot do."""
        if self.offload not in OFFLOADS:
            raise ValueError(f"--offload: must be one of {', '.join(OFFLOADS)}, got {self.offload!r}")
        if self.offload != "none" and not device.startswith("cuda"):
            raise ValueError(
                f"--offload: offloading moves weights between CPU and a GPU; device is {device}, got {self.offload!r}"
            )
        kinds = cache_kinds()
        if self.cache != "none" and self.cache not in kinds:
            raise ValueError(f"--cache: must be none or one of {', '.join(kinds)}, got {self.cache!r}")
        if not 0.0 < self.cache_threshold <= 10.0:
            raise ValueError(f"--cache-threshold: must be in (0, 10], got {self.cache_threshold!r}")
        if self.attention:
            from diffusers.models.attention_dispatch import AttentionBackendName

            names = [b.value for b in AttentionBackendName if not b.value.startswith("_")]
            if self.attention not in names:
                raise ValueError(f"--attention: must be one of {', '.join(names)}, got {self.attention!r}")
            if self.attention.endswith("_hub"):  # these fetch kernels from the Hub at load time
                raise ValueError(
                    f"--attention: Noor downloads nothing at run time; choose a local backend, got {self.attention!r}"
                )


def check_dtype(dtype: str, device: str) -> None:
    """Run a matmul and a conv in `dtype` on `device`, so a dtype the machine cannot run fails at registration."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"--dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
    t = getattr(torch, dtype)
    try:
        a = torch.ones(8, 8, dtype=t, device=device)
        (a @ a).sum().item()
        torch.nn.functional.conv2d(a[None, None], a[None, None, :3, :3]).sum().item()
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--dtype: {device} cannot run {dtype} ({str(err).splitlines()[0]}), got {dtype!r}") from err
    if device.startswith("cuda") and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--dtype: this GPU has no bfloat16; use float16, got {dtype!r}")


def cache_config(pipe: Any, options: Options) -> Any:
    import diffusers

    cls = getattr(diffusers, cache_kinds()[options.cache])
    if options.cache == "first-block":
        return cls(threshold=options.cache_threshold)
    if options.cache in ("faster", "pab"):
        # both skip attention by timestep: they read the pipeline's current timestep
        extra = {"spatial_attention_block_skip_range": 2, "current_timestep_callback": lambda: pipe.current_timestep}
        if options.cache == "faster":
            extra["is_guidance_distilled"] = type(pipe).__name__.startswith("Flux")  # FLUX.1 folds guidance in
        return cls(**extra)
    return cls()


def denoisers(pipe: Any) -> list[Any]:
    """The transformer(s) a pipeline denoises with (Wan 2.2 A14B has two experts)."""
    return [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]


def apply(pipe: Any, options: Options, previous: Options | None = None) -> None:
    """Switch a loaded pipeline from `previous` options to `options` (offload stays as loaded)."""
    previous = previous or Options()
    vae = getattr(pipe, "vae", None)
    # 1. VAE tiling and slicing
    if vae is not None:
        for name, on in (("tiling", options.vae_tiling), ("slicing", options.vae_slicing)):
            method = getattr(vae, f"{'enable' if on else 'disable'}_{name}", None)
            if method is not None and (on or getattr(previous, f"vae_{name}")):
                method()
    # 2. attention backend
    for model in denoisers(pipe):
        if options.attention and hasattr(model, "set_attention_backend"):
            model.set_attention_backend(options.attention)
        elif previous.attention and hasattr(model, "reset_attention_backend"):
            model.reset_attention_backend()
    # 3. cache hooks: off first, then on with the new config
    for model in denoisers(pipe):
        if getattr(model, "is_cache_enabled", False):
            model.disable_cache()
        if options.cache != "none":
            if not hasattr(model, "enable_cache"):
                raise ValueError(
                    f"--cache: {type(model).__name__} has no diffusers cache support, got {options.cache!r}"
                )
            try:
                model.enable_cache(cache_config(pipe, options))
            except (ValueError, TypeError, IndexError, KeyError) as err:  # its blocks are not ones the hooks know
                raise ValueError(
                    f"--cache: diffusers cannot attach {options.cache} to {type(model).__name__} ({err}),"
                    f" got {options.cache!r}"
                ) from None


def load_time(pipe: Any, options: Options, device: str) -> None:
    """Place the pipeline: on the device, or offloaded to it (set once, when the model is loaded)."""
    if options.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif options.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif options.offload == "group":
        pipe.enable_group_offload(onload_device=device, offload_type="block_level", num_blocks_per_group=1)
    else:
        pipe.to(device)


def reset_cache_state(pipe: Any) -> None:
    """Forget what a cache remembered from the last generation, so each one starts clean."""
    for model in denoisers(pipe):
        if getattr(model, "is_cache_enabled", False):
            model._reset_stateful_cache()
