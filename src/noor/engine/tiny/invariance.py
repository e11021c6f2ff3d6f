"""Batch invariance for noor-tiny: a request's clip comes out bit-identical whether it runs alone or in a batch.

Why a batch moves results at all (measured on this project's CPUs, PyTorch 2.13 with MKL, AVX2): a float32 GEMM
sums a row's products in an order that depends on the call's row count M, not only on the row. From about 12 rows
up (4 on one thread) a row comes out the same whatever M is; below that MKL takes other kernels (M = 1 is a GEMV),
and each small M its own. noor-tiny has such calls wherever there is one row per clip or per frame: the pooled
prompt (M = the batch's text rows), the timestep embedding and the adaLN modulations of an image or first frame
(M = clips), the text encoder's few tokens. And the text encoder pads a batch's prompts to the longest, so a prompt
alone is encoded, and attended to, at another length.

What the switch does (`enable_batch_invariance`, off by default, reversible):
- every Linear of the denoiser gives each sample the bytes a clip alone gets (a diffusers `ModelHook` on each
  `nn.Linear`, attached from outside; no weight moves). A sample with few rows runs as a GEMM of its own; a sample
  with many rows (a clip's tokens, where the work is) shares the batch's GEMM once that shape has been checked to
  give the same bytes on this machine (`PerSampleLinear`). Under no_grad only: with autograd on (training) a
  Linear runs as usual;
- the pipeline encodes each prompt alone, at its own length, and pads the states to the text encoder's
  `max_length` with masked zeros, so every batch's cross-attention has the same key length.
Everything else in the denoiser is already per sample: LayerNorm and softmax reduce along a row, SDPA on a CPU
splits work by (sample, head, query block), and the rest is elementwise. The VAE decodes clip by clip and each clip
draws its noise from its own generator. Not covered: the optional conv stem (`conv_channels` > 0, off in the
shipped weights) convolves a batch's frames in one call.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn
from torch.nn import functional as F

HOOK = "noor_batch_invariance"


# Rows a sample must bring before its GEMM may share a call with the batch's other samples. Below this MKL takes
# small-M kernels (a GEMV at 1 row) whose sums depend on M; the documented threshold, with margin.
SHARED_MIN_ROWS = 12
# (samples, rows a sample, in, out, bias, dtype, threads) -> whether one GEMM of the whole batch gave each sample
# the same bytes as its own GEMM, probed on the first call of that shape on this machine (`PerSampleLinear`)
_SHARED_AGREES: dict[tuple[Any, ...], bool] = {}


def _per_sample(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """One GEMM of each sample's rows, written into its place in the output."""
    out = x.new_empty(*x.shape[:-1], weight.shape[0])
    for sample, result in zip(x, out, strict=True):
        rows, into = sample.reshape(-1, x.shape[-1]), result.view(-1, weight.shape[0])
        if bias is None:
            torch.mm(rows, weight.t(), out=into)
        else:
            torch.addmm(bias, rows, weight.t(), out=into)
    return out


class PerSampleLinear(ModelHook):
    """An `nn.Linear` whose every sample (leading index) comes out as a GEMM of that sample alone would give.

    A sample with few rows (a clip's pooled prompt, its timestep's modulations) gets a GEMM of its own, whose shape
    does not depend on how many samples share the call. A sample with many rows (a clip's tokens) shares one GEMM
    with the batch, which is where batching's speed comes from, but only once that shape has been checked: the
    first call of each shape runs both ways and compares the bytes, and a shape where they differ stays per sample
    for the process's life. What decides the sum order is the kernel MKL picks for the shape and thread count,
    not the values, so one check a shape holds for every later call of it."""

    def new_forward(self, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        weight, bias = module.weight, module.bias
        if x.dim() == 1 or torch.is_grad_enabled():  # sampling only: autograd refuses out=, training needs no match
            return F.linear(x, weight, bias)
        rows = x[0].numel() // x.shape[-1] if len(x) else 0
        if len(x) < 2 or rows < SHARED_MIN_ROWS:
            return _per_sample(x, weight, bias)
        key = (len(x), rows, x.shape[-1], weight.shape[0], bias is None, x.dtype, torch.get_num_threads())
        agrees = _SHARED_AGREES.get(key)
        if agrees:
            return F.linear(x, weight, bias)
        alone = _per_sample(x, weight, bias)
        if agrees is None:
            _SHARED_AGREES[key] = torch.equal(F.linear(x, weight, bias), alone)
        return alone


def _registries(model: nn.Module) -> list[Any]:
    """The diffusers hook registries of the Linears under `model` that have one."""
    linears = (layer for layer in model.modules() if isinstance(layer, nn.Linear))
    return [registry for layer in linears if (registry := getattr(layer, "_diffusers_hook", None)) is not None]


def enable(model: nn.Module) -> None:
    """Give every Linear under `model` per-sample results (see the module docstring). Idempotent."""
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            registry = HookRegistry.check_if_exists_or_initialize(layer)
            if registry.get_hook(HOOK) is None:
                registry.register_hook(PerSampleLinear(), HOOK)


def disable(model: nn.Module) -> None:
    """Undo `enable`: the Linears run on the whole batch again."""
    for registry in _registries(model):
        registry.remove_hook(HOOK, recurse=False)


def is_enabled(model: nn.Module) -> bool:
    return any(registry.get_hook(HOOK) is not None for registry in _registries(model))
