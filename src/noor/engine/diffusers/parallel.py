"""One request across k ranks: diffusers' own context parallelism (Ulysses, ring) and CFG parallelism.

A rank is one process of a k-process group (`torch.distributed`: NCCL on GPUs, gloo on CPU slots). Every
rank loads the same pipeline and runs the same call with the same seed; the transformer is split:

- **ulysses / ring** (`diffusers.ContextParallelConfig` + `ModelMixin.enable_parallelism`): each rank holds
  1/(ulysses x ring) of the video tokens; self-attention is all-to-all over heads (Ulysses) or passes
  key/value blocks round a ring, merged by their log-sum-exp. Cross-attention over the prompt needs no
  collective: this rank's queries against the whole prompt, which every rank holds (diffusers does the same
  for Wan, huggingface/diffusers#12909; Noor applies it to LTX-Video too, see `PLANS`).
- **cfg**: the two guidance branches run on two ranks at once instead of one after the other; each rank
  computes its branch and the pair is all-gathered and combined exactly as the pipeline would
  (`uncond + scale * (cond - uncond)`), so the pipeline itself is called without guidance.

Ranks are laid out as a (cfg, ring, ulysses) device mesh. What a family cannot split is refused by `check`
before any work is queued.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from noor.perf.parallelism import ParallelPlan
from noor.perf.shape import PerfError


class ParallelError(ValueError):
    """A parallel plan this model, request or worker cannot run; the message names the field and value."""


def parse(text: str) -> ParallelPlan:
    """`ParallelPlan.from_text`, its error a ParallelError."""
    try:
        return ParallelPlan.from_text(text)
    except PerfError as err:
        raise ParallelError(str(err)) from None


@dataclass(frozen=True)
class FamilyPlan:
    """How one transformer class splits: its context-parallel plan (None: diffusers' own `_cp_plan`), the
    attention modules that run locally on every rank (prompt attention, see the module docstring), and how the
    pipeline's prompt encoding maps onto the transformer's arguments for the guidance branches."""

    cp_plan: Any = None
    local_attention: tuple[str, ...] = ()  # fnmatch patterns over the transformer's module names
    # (transformer kwarg, encode_prompt's positive output, its negative output); None: no cfg parallelism
    guidance_args: tuple[tuple[str, str, str], ...] | None = None
    guidance_kwarg: str = "guidance_scale"  # the pipeline argument that carries the classifier-free guidance scale
    encode_prompt_outputs: tuple[str, ...] = ()
    # (transformer, ulysses rank, ring degree): family-specific hooks
    prepare: Callable[[Any, int, int], None] | None = None


def _cp(kind: str, dim: int, dims: int, output: bool = False) -> Any:
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    if kind == "gather":
        return ContextParallelOutput(gather_dim=dim, expected_dims=dims)
    return ContextParallelInput(split_dim=dim, expected_dims=dims, split_output=output)


def _ltx() -> FamilyPlan:
    # diffusers' LTX plan without splitting the prompt: its cross-attention then needs no collective (and no
    # prompt length divisible by the degree), and its prompt mask never meets the Ulysses all-to-all, whose
    # mask handling does not split the mask's head axis in diffusers 0.42 (huggingface/diffusers#14316).
    return FamilyPlan(
        cp_plan={
            "": {"hidden_states": _cp("split", 1, 3)},
            "rope": {0: _cp("split", 1, 3, output=True), 1: _cp("split", 1, 3, output=True)},
            "proj_out": _cp("gather", 1, 3),
        },
        local_attention=("transformer_blocks.*.attn2",),
        guidance_args=(
            ("encoder_hidden_states", "prompt_embeds", "negative_prompt_embeds"),
            ("encoder_attention_mask", "prompt_attention_mask", "negative_prompt_attention_mask"),
        ),
        encode_prompt_outputs=(
            "prompt_embeds",
            "prompt_attention_mask",
            "negative_prompt_embeds",
            "negative_prompt_attention_mask",
        ),
    )


def _hunyuanvideo() -> FamilyPlan:
    """HunyuanVideo attends to its video and prompt tokens as one joint sequence; diffusers 0.42 has no plan for
    it. Noor's: the video tokens are split, and the prompt (after the token refiner, which runs locally) stays whole
    on every rank, its padding keys masked. How each prompt key is then attended to exactly once:

    - ulysses: on every rank but the first the prompt keys are masked out, so that after the all-to-all each is
      there once (the prompt queries then get the same result on every rank, and the prompt stream stays the same
      everywhere);
    - ring (and ulysses x ring): diffusers' ring reuses a rank's key mask for every block of keys, so the joint
      attention is taken apart (`_joint_attention`): every query over the video keys of all ranks by diffusers'
      ring, unmasked, and over the prompt's unpadded keys locally, the two merged by their log-sum-exp.

    Its classifier-free guidance is the pipeline's true CFG (`true_cfg_scale`, a second transformer call on the
    negative prompt), which a checkpoint without a guidance embedder takes (see `Denoiser.check`)."""
    return FamilyPlan(
        cp_plan={
            "x_embedder": {0: _cp("split", 1, 3, output=True)},
            "rope": {0: _cp("split", 0, 2, output=True), 1: _cp("split", 0, 2, output=True)},
            "proj_out": _cp("gather", 1, 3),
        },
        local_attention=("context_embedder*",),
        guidance_args=(
            ("encoder_hidden_states", "prompt_embeds", "negative_prompt_embeds"),
            ("encoder_attention_mask", "prompt_attention_mask", "negative_prompt_attention_mask"),
            ("pooled_projections", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"),
        ),
        guidance_kwarg="true_cfg_scale",
        encode_prompt_outputs=("prompt_embeds", "pooled_prompt_embeds", "prompt_attention_mask"),
        prepare=_prompt_once,
    )


def _joint_blocks(transformer: Any) -> list[Any]:
    return [*transformer.transformer_blocks, *transformer.single_transformer_blocks]


def _prompt_once(transformer: Any, ulysses_rank: int, ring: int) -> None:
    """Each prompt key attended to once (see `_hunyuanvideo`), through the blocks' attention mask (B, 1, 1, video +
    prompt), which the blocks take positionally and hand to their attention unchanged."""
    if ring > 1:
        joint = _joint_processor()
        for block in _joint_blocks(transformer):
            old = block.attn.processor
            block.attn.set_processor(joint())
            block.attn.processor._attention_backend = old._attention_backend
            block.attn.processor._parallel_config = old._parallel_config
            block.register_forward_pre_hook(_prompt_keys)
    elif ulysses_rank > 0:
        for block in _joint_blocks(transformer):
            block.register_forward_pre_hook(_mask_prompt)


def _mask_prompt(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    hidden_states, encoder_hidden_states, temb, mask, *rest = args
    mask = mask.clone()
    mask[..., hidden_states.shape[1] :] = False
    return (hidden_states, encoder_hidden_states, temb, mask, *rest)


class PromptKeys(NamedTuple):
    """A joint block's attention mask, as `_joint_attention` reads it: how many prompt tokens end the sequence and
    which of them are keys (the rest are padding)."""

    tokens: int
    keep: Any  # (B, P) bool


def _prompt_keys(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    hidden_states, encoder_hidden_states, temb, mask, *rest = args
    prompt = encoder_hidden_states.shape[1]
    return (hidden_states, encoder_hidden_states, temb, PromptKeys(prompt, mask[:, 0, 0, -prompt:].bool()), *rest)


@functools.cache
def _joint_processor() -> type:
    """diffusers' own HunyuanVideo attention processor with its one attention call (`dispatch_attention_fn`) bound
    to `_joint_attention`: the projections, norms, rotary embedding and output stay diffusers' code."""
    import types

    from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0 as base

    call = base.__call__
    if "dispatch_attention_fn" not in call.__code__.co_names:
        raise ParallelError(
            "parallel: this diffusers' HunyuanVideoAttnProcessor2_0 no longer calls dispatch_attention_fn"
        )
    scope = {**call.__globals__, "dispatch_attention_fn": _joint_attention}
    joint = types.FunctionType(call.__code__, scope, call.__name__, call.__defaults__, call.__closure__)
    return type("HunyuanVideoJointRingProcessor", (base,), {"__call__": joint})


def _joint_attention(
    query: Any,
    key: Any,
    value: Any,
    attn_mask: PromptKeys,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    backend: Any = None,
    parallel_config: Any = None,
) -> Any:
    """Softmax attention of this rank's queries over the video keys of every rank and the prompt's unpadded keys,
    as one rank computes it over the whole joint sequence.

    query, key, value: (B, S + P, H, D), this rank's S video tokens then the whole prompt's P."""
    import torch
    from diffusers.models.attention_dispatch import _native_flash_attention_forward_op, dispatch_attention_fn

    assert dropout_p == 0.0 and not is_causal
    video = key.shape[1] - attn_mask.tokens
    # 1. over the video keys of every rank: diffusers' ring (and Ulysses), with its log-sum-exp; no key is padding
    out, lse = dispatch_attention_fn(
        query,
        key[:, :video],
        value[:, :video],
        attention_kwargs={"return_lse": True},
        backend=backend,
        parallel_config=parallel_config,
    )  # (B, S + P, H, D), (B, S + P, H)
    out, lse = out.float(), lse.float().unsqueeze(-1)
    # 2. over the prompt's keys, which every rank holds: here, each sample's padding keys left out
    merged = []
    for b, keep in enumerate(attn_mask.keep):
        if not keep.any():
            merged.append(out[b : b + 1])
            continue
        prompt_out, prompt_lse = _native_flash_attention_forward_op(
            None,
            query[b : b + 1],
            key[b : b + 1, video:][:, keep],
            value[b : b + 1, video:][:, keep],
            return_lse=True,
            _save_ctx=False,
        )
        # 3. the two softmaxes as one: each part weighted by its share of the total exp-sum
        weight = torch.sigmoid(prompt_lse.float().unsqueeze(-1) - lse[b : b + 1])
        merged.append(torch.lerp(out[b : b + 1], prompt_out.float(), weight))
    return torch.cat(merged).to(query.dtype)


# transformer class -> how it splits. A class missing here cannot run on several ranks (yet).
PLANS: dict[str, Callable[[], FamilyPlan]] = {
    "WanTransformer3DModel": lambda: FamilyPlan(
        local_attention=(),  # Wan's processor already keeps prompt attention local (diffusers#12909)
        guidance_args=(("encoder_hidden_states", "prompt_embeds", "negative_prompt_embeds"),),
        encode_prompt_outputs=("prompt_embeds", "negative_prompt_embeds"),
    ),
    "LTXVideoTransformer3DModel": _ltx,
    "HunyuanVideoTransformer3DModel": _hunyuanvideo,
}


def family_plan(transformer_class: str) -> FamilyPlan:
    if transformer_class not in PLANS:
        supported = ", ".join(sorted(PLANS))
        raise ParallelError(
            f"parallel: no parallel plan for {transformer_class} yet; transformers that run on several ranks: "
            f"{supported}"
        )
    return PLANS[transformer_class]()


@dataclass(frozen=True)
class Denoiser:
    """What a plan needs to know of a checkpoint's transformer (read from its config, no weights loaded)."""

    class_name: str
    heads: int
    count: int = 1  # denoisers the pipeline switches between (Wan 2.2 A14B: 2)
    embedded_guidance: bool = False  # guidance-distilled: the config's `guidance_embeds` (HunyuanVideo, FLUX)

    @classmethod
    def read(cls, path: Path) -> Denoiser:
        config = json.loads((path / "transformer" / "config.json").read_text())
        return cls(
            class_name=str(config.get("_class_name", "")),
            heads=int(config.get("num_attention_heads") or 1),
            count=2 if (path / "transformer_2" / "config.json").is_file() else 1,
            embedded_guidance=bool(config.get("guidance_embeds", False)),
        )

    def check(self, plan: ParallelPlan, tokens: int, guidance: float) -> None:
        """Refuse a plan this checkpoint or request cannot run, naming the reason (before anything is queued).

        `tokens`: the video tokens one transformer call sees; `guidance`: the request's guidance scale."""
        if plan.degrees is None:  # auto: at least one split must run
            self.splits(plan, tokens, guidance)
            return
        u, r, c = plan.degrees
        if plan.gpus == 1:
            return
        fam = family_plan(self.class_name)
        if self.heads % u:
            raise ParallelError(f"parallel: ulysses={u} must divide the model's {self.heads} attention heads")
        if tokens % (u * r):
            raise ParallelError(f"parallel: ulysses x ring = {u * r} must divide the request's {tokens} video tokens")
        if c > 2:
            raise ParallelError(f"parallel: cfg={c}; classifier-free guidance has 2 branches, so cfg is 1 or 2")
        if c == 2:
            if fam.guidance_args is None:
                raise ParallelError(f"parallel: cfg=2 cannot run {self.class_name}: no plan")
            if self.embedded_guidance:
                raise ParallelError(
                    f"parallel: cfg=2 cannot run this {self.class_name} checkpoint: it is guidance-distilled "
                    "(guidance_embeds), its guidance taken in the one transformer call of each step, so there is "
                    "no second branch to split"
                )
            if guidance <= 1.0:
                raise ParallelError(f"parallel: cfg=2 needs guidance > 1 (two branches), got guidance {guidance:g}")
            if self.count > 1:
                raise ParallelError("parallel: cfg=2 on a two-expert pipeline (Wan 2.2 A14B) is not supported yet")

    def splits(self, plan: ParallelPlan, tokens: int, guidance: float) -> list[ParallelPlan]:
        """The concrete plans of `plan`'s rank count this checkpoint and request can run: cfg first, then fewer
        sequence collectives (the order a request with no perf model to choose by takes the first of).
        ParallelError with the first reason when there is none."""
        if plan.degrees is not None:
            self.check(plan, tokens, guidance)
            return [plan]
        g, found, reasons = plan.gpus, [], []
        for c in (2, 1):
            for u in range(g // c, 0, -1):
                if g % (c * u) == 0:
                    one = ParallelPlan(gpus=g, ulysses=u, ring=g // (c * u), cfg=c)
                    try:
                        self.check(one, tokens, guidance)
                    except ParallelError as err:
                        reasons.append(str(err))
                        continue
                    found.append(one)
        if not found:
            raise ParallelError(f"parallel: no split of {g} ranks runs this request ({reasons[0].split(': ', 1)[1]})")
        return found


@contextlib.contextmanager
def _cpu_counts_as_one_device() -> Iterator[None]:
    """diffusers' `_resolve_parallel_config` places rank r on device `r % torch.accelerator.device_count()`,
    which divides by zero on a machine with no accelerator. There every rank is a process on the CPU, so count
    the CPU as one device for that call only (narrow: nothing else reads the count meanwhile)."""
    import torch

    if torch.accelerator.device_count() > 0:
        yield
        return
    real = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = real


_LIBRARIES: list[Any] = []  # a torch Library unregisters its kernels when it is garbage-collected


def _register_cpu_flash_kernel() -> None:
    """Ring attention merges per-block results by their log-sum-exp, so it needs an attention op that returns
    it. diffusers' `native` op does not; its `_native_flash` backend calls `aten::_scaled_dot_product_flash_
    attention`, which PyTorch implements for CUDA only, while its CPU flash kernel is a separate op
    (`_scaled_dot_product_flash_attention_for_cpu`, same maths, returns the LSE). Register that as the CPU
    kernel of the first, once per process, so diffusers' own ring path runs unchanged on CPU ranks. GPUs use
    the fast backends (flash, cuDNN) as they are."""
    if _LIBRARIES:  # once per process
        return
    import torch

    def flash_on_cpu(
        query: Any,
        key: Any,
        value: Any,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        return_debug_mask: bool = False,
        *,
        scale: float | None = None,
    ) -> tuple[Any, ...]:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, scale=scale
        )
        empty = query.new_empty(0)
        # (output, logsumexp, cum_seq_q, cum_seq_k, max_q, max_k, philox_seed, philox_offset, debug_attn_mask)
        return out, lse, empty, empty, query.shape[2], key.shape[2], empty, empty, empty

    library = torch.library.Library("aten", "IMPL")
    library.impl("_scaled_dot_product_flash_attention", flash_on_cpu, "CPU")
    _LIBRARIES.append(library)


@dataclass
class Ranks:
    """This process's place in the k-rank group: the mesh and the cfg branch it computes."""

    mesh: Any
    cfg_rank: int
    cfg_group: Any


def enable(pipe: Any, plan: ParallelPlan, family: FamilyPlan) -> Ranks:
    """Split `pipe.transformer` across the ranks of the initialised process group, as `plan` says."""
    import torch
    import torch.distributed as dist
    from diffusers import ContextParallelConfig

    u, r, c = plan.degrees or (1, 1, 1)
    if not dist.is_initialized() or dist.get_world_size() != plan.gpus:
        world = dist.get_world_size() if dist.is_initialized() else 1
        raise ParallelError(f"parallel: {plan.text()} needs {plan.gpus} ranks, this process group has {world}")
    device_type = torch._C._get_accelerator().type
    mesh = dist.device_mesh.init_device_mesh(device_type, (c, r, u), mesh_dim_names=("cfg", "ring", "ulysses"))
    transformers = [m for name in ("transformer", "transformer_2") if (m := getattr(pipe, name, None)) is not None]
    if u * r > 1:
        for transformer in transformers:
            config = ContextParallelConfig(ulysses_degree=u, ring_degree=r, mesh=mesh["ring", "ulysses"])
            with _cpu_counts_as_one_device():
                transformer.enable_parallelism(config=config, cp_plan=family.cp_plan)
            _attention_backends(transformer, family, ring_on_cpu=r > 1 and device_type == "cpu")
            if family.prepare is not None:
                family.prepare(transformer, mesh["ulysses"].get_local_rank(), r)
    return Ranks(mesh=mesh, cfg_rank=mesh["cfg"].get_local_rank(), cfg_group=mesh["cfg"].get_group())


def _attention_backends(transformer: Any, family: FamilyPlan, ring_on_cpu: bool) -> None:
    """Prompt attention runs locally (see the module docstring); on CPU, ring self-attention runs on
    `_native_flash` with the CPU kernel registered by `_register_cpu_flash_kernel`. Set per processor, not by
    `set_attention_backend`, which would also change the process-wide default backend."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    if ring_on_cpu:
        _register_cpu_flash_kernel()
    for name, module in transformer.named_modules():
        processor = getattr(module, "processor", None)
        if processor is None or not hasattr(processor, "_parallel_config"):
            continue
        if any(fnmatch.fnmatch(name, pattern) for pattern in family.local_attention):
            processor._parallel_config = None
        elif ring_on_cpu:
            processor._attention_backend = AttentionBackendName._NATIVE_FLASH


class GuidanceSplit:
    """cfg=2: the pipeline is called without guidance; each transformer call computes this rank's branch (rank 0
    the prompt, rank 1 the negative prompt), all-gathers the pair, and returns the guided prediction exactly as
    the pipeline would have combined it: `uncond + scale * (cond - uncond)`, in float32."""

    def __init__(self, transformer: Any, ranks: Ranks, family: FamilyPlan, embeds: dict[str, Any], scale: float):
        self.ranks, self.scale = ranks, scale
        # the negative branch's arguments, swapped in on the rank that computes it
        assert family.guidance_args is not None
        self.swap = {arg: embeds[neg] for arg, _, neg in family.guidance_args}
        self.handles = [
            transformer.register_forward_pre_hook(self.before, with_kwargs=True),
            transformer.register_forward_hook(self.after),
        ]

    def before(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict]:
        if self.ranks.cfg_rank == 1:  # in the dtype the pipeline gave the positive branch's (HunyuanVideo: its mask)
            kwargs = {**kwargs, **{k: v.to(kwargs[k].dtype) for k, v in self.swap.items() if k in kwargs}}
        return args, kwargs

    def after(self, module: Any, args: Any, output: Any) -> Any:
        import torch
        import torch.distributed as dist

        sample = output[0] if isinstance(output, tuple) else output.sample
        mine = sample.float().contiguous()
        both = [torch.empty_like(mine) for _ in range(2)]
        dist.all_gather(both, mine, group=self.ranks.cfg_group)
        cond, uncond = both
        guided = (uncond + self.scale * (cond - uncond)).to(sample.dtype)
        if isinstance(output, tuple):
            return (guided, *output[1:])
        output.sample = guided
        return output

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def encode_for_guidance(pipe: Any, family: FamilyPlan, prompt: str, negative_prompt: str | None) -> dict[str, Any]:
    """Both branches' prompt encodings, by the pipeline's own `encode_prompt`: in one call where it takes the
    negative prompt, else one call per prompt (HunyuanVideo), the second's outputs named `negative_...`."""
    import inspect

    params = inspect.signature(pipe.encode_prompt).parameters
    negative = negative_prompt or ""
    if "negative_prompt" not in params:
        positive = dict(zip(family.encode_prompt_outputs, pipe.encode_prompt(prompt=prompt), strict=True))
        negatives = zip(family.encode_prompt_outputs, pipe.encode_prompt(prompt=negative), strict=True)
        return positive | {f"negative_{name}": value for name, value in negatives}
    kwargs: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
    if "do_classifier_free_guidance" in params:
        kwargs["do_classifier_free_guidance"] = True
    out = pipe.encode_prompt(**kwargs)
    return dict(zip(family.encode_prompt_outputs, out, strict=True))
