"""The seed's training side: a small image-text model, a mixed-precision step, its loader.

* :class:`ModelConfig` + :class:`ImageTextModel`: a CLIP-style dual encoder (image and text
  transformer blocks) with fusion blocks in which text tokens cross-attend to image tokens,
  trained with CLIP's contrastive loss plus image-text matching. ``backend`` selects the kernel
  of **every** attention layer, so the sequence-length behaviour of the backend (O(N²) memory
  for explicit attention, O(N) for the fused kernels, O(N·w) for ``local``) is the model's.
* :func:`train_step`: one optimisation step in ``"fp32"``, ``"bf16"`` (``torch.autocast``) or
  ``"fp16"`` (autocast + ``torch.amp.GradScaler``; CUDA only), labelled for the profiler as
  ``mmperf::optimizer`` (zero_grad, step, scaler update), ``mmperf::forward``, ``mmperf::backward``.
* :func:`run_loader_training`: a loader feeding :func:`train_step` for N steps; images/s end to
  end and the data-stall fraction (:class:`LoaderTrainingResult`).

What a step costs per machine: docs/reference-results.md#the-training-steps-cost.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from reference.attention import CrossAttention, LocalAttention, SeedSparseAttention

TRAIN_BACKENDS: tuple[str, ...] = ("math", "sdpa", "mha", "local", "seed_sparse")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = ["PRECISIONS", "TRAIN_BACKENDS", "ImageTextModel", "LoaderTrainingResult", "Losses",
           "ModelConfig", "TrainBatch", "canonical_tensors", "load_canonical", "make_train_batch",
           "run_loader_training", "train_step"]


@dataclass(frozen=True)
class ModelConfig:
    """Widths of :class:`ImageTextModel` (validated on construction: ValueError).

    The defaults: 224 px images in 32 px patches (49 image tokens), D=128, 4 heads of 32, MLP
    4·D, 2 image + 2 text + 1 fusion layers, 32 text tokens, vocabulary 4096: ~1.95 M parameters.
    """

    image_size: int = 224
    patch_size: int = 32
    dim: int = 128
    heads: int = 4
    image_layers: int = 2
    text_layers: int = 2
    fusion_layers: int = 1
    context_length: int = 32
    vocab_size: int = 4096
    mlp_ratio: int = 4
    window: int = 16  # keys per query of the ``local`` backend

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            low = 0 if f.name.endswith("_layers") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ModelConfig.{f.name} must be an int >= {low}, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"ModelConfig: dim={self.dim} is not divisible by heads="
                             f"{self.heads}; heads must divide dim")
        if self.image_size % self.patch_size:
            raise ValueError(f"ModelConfig: image_size={self.image_size} is not a multiple of "
                             f"patch_size={self.patch_size}")

    @property
    def image_tokens(self) -> int:
        """N_img = (image_size / patch_size)²."""
        return (self.image_size // self.patch_size) ** 2


class TrainBatch(NamedTuple):
    """One training batch: images float (B, 3, S, S) normalised, input_ids int64 (B, L),
    attention_mask (B, L) (1 or True on real tokens)."""

    images: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


class Losses(NamedTuple):
    """Scalar losses of one forward: ``total = contrastive + matching``."""

    total: torch.Tensor
    contrastive: torch.Tensor
    matching: torch.Tensor


def _check_choice(value: object, accepted: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"{what}={value!r} is not supported; accepted: "
                         f"{', '.join(map(repr, accepted))}")
    return value


class _Attention(nn.Module):
    """``forward(query (B, N_q, D), context (B, N_kv, D)) -> (B, N_q, D)`` with one backend."""

    def __init__(self, dim: int, heads: int, backend: str, window: int) -> None:
        super().__init__()
        self.inner: nn.Module
        if backend == "seed_sparse":
            self.inner = SeedSparseAttention(dim, heads)
        elif backend == "local":
            self.inner = LocalAttention(dim, heads, window=window)
        else:
            self.inner = CrossAttention(dim, heads, backend=backend)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.inner(query, context)  # type: ignore[no-any-return]


class _Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x), ln(context or x))``, then ``+ mlp(ln(x))``.
    x (B, N, D), context (B, N_ctx, D) | None (self-attention) -> (B, N, D)."""

    def __init__(self, config: ModelConfig, backend: str, cross: bool = False) -> None:
        super().__init__()
        d = config.dim
        self.norm1 = nn.LayerNorm(d)
        self.norm_context = nn.LayerNorm(d) if cross else None
        self.attn = _Attention(d, config.heads, backend, config.window)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, d * config.mlp_ratio), nn.GELU(),
                                 nn.Linear(d * config.mlp_ratio, d))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        ctx = h if context is None or self.norm_context is None else self.norm_context(context)
        x = x + self.attn(h, ctx)
        return x + self.mlp(self.norm2(x))


class ImageTextModel(nn.Module):
    """Small CLIP-style dual encoder with a fusion encoder.

    ``forward(images (B, 3, S, S), input_ids (B, L) int64, attention_mask (B, L)) -> Losses``,
    B >= 2 (ITM needs another image of the batch as a negative), S = ``config.image_size``,
    L <= ``config.context_length``. Padding tokens are attended to (the seed's module takes no
    mask) but left out of the pooled text embedding (masked mean).

    Patch embedding and ``image_layers`` pre-norm transformer blocks over the image, token
    embedding and ``text_layers`` blocks over the text, ``fusion_layers`` blocks in which text
    tokens cross-attend to image tokens, and two losses: CLIP's symmetric InfoNCE on the pooled,
    projected embeddings (learnable temperature, CLIP's init 1/0.07) and image-text matching
    (ITM): the fused text of each pair, and of the same text with the next image of the batch
    (``roll(1)``, a negative), classified matched / not matched. ``backend`` selects the kernel
    of every attention layer (image and text self-attention and the fusion):

    =============== ===================================================== ==================
    backend         attention layers                                      training memory
    =============== ===================================================== ==================
    ``math``        :class:`~reference.attention.CrossAttention`,          O(N²): scores kept
                    explicit matmul / softmax / matmul                     for backward
    ``sdpa``        same parameters, ``F.scaled_dot_product_attention``    O(N): flash fwd+bwd
    ``mha``         same parameters, ``F.multi_head_attention_forward``    O(N): SDPA inside
                    with ``need_weights=False``
    ``local``       :class:`~reference.attention.LocalAttention`, window   O(N·w)
                    ``config.window`` (truly sparse)
    ``seed_sparse`` the article's :class:`~reference.attention.             O(N²): weights
                    SeedSparseAttention` (need_weights=True, dropout 0.1)  materialised
    =============== ===================================================== ==================

    ``math`` / ``sdpa`` / ``mha`` compute the same function of the same parameters. ``local``
    equals them when ``window >= 2 * N - 1`` for the longest sequence (every key in every
    window). ``seed_sparse`` has the same maths as ``mha`` except dropout 0.1 on the attention
    weights in ``train()`` mode: in ``eval()`` mode (or with its dropout set to 0) it equals
    ``mha``. Its parameters are packed (``in_proj_weight``): :meth:`with_backend` and
    :func:`canonical_tensors` convert between the layouts, so every backend starts from the same
    weights and gradients compare name by name.
    """

    def __init__(self, config: ModelConfig | None = None, backend: str = "sdpa") -> None:
        super().__init__()
        config = ModelConfig() if config is None else config
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig or None, got {config!r}")
        self.config = config
        self.backend = _check_choice(backend, TRAIN_BACKENDS, "backend")
        d = config.dim
        self.patch_embed = nn.Conv2d(3, d, config.patch_size, stride=config.patch_size)
        self.image_pos = nn.Parameter(torch.randn(1, config.image_tokens, d) * 0.02)
        self.image_blocks = nn.ModuleList(_Block(config, backend)
                                          for _ in range(config.image_layers))
        self.token_embed = nn.Embedding(config.vocab_size, d)
        self.text_pos = nn.Parameter(torch.randn(1, config.context_length, d) * 0.02)
        self.text_blocks = nn.ModuleList(_Block(config, backend)
                                         for _ in range(config.text_layers))
        self.fusion_blocks = nn.ModuleList(_Block(config, backend, cross=True)
                                           for _ in range(config.fusion_layers))
        self.image_norm, self.text_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.image_proj = nn.Linear(d, d, bias=False)
        self.text_proj = nn.Linear(d, d, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.itm_head = nn.Linear(d, 2)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> image tokens (B, N_img, D)."""
        x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.image_pos
        for block in self.image_blocks:
            x = block(x)
        return self.image_norm(x)  # type: ignore[no-any-return]

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> text tokens (B, L, D)."""
        x = self.token_embed(input_ids) + self.text_pos[:, :input_ids.shape[1]]
        for block in self.text_blocks:
            x = block(x)
        return self.text_norm(x)  # type: ignore[no-any-return]

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> Losses:
        self._check(images, input_ids, attention_mask)
        image, text = self.encode_image(images), self.encode_text(input_ids)
        b = image.shape[0]
        keep = attention_mask.to(text.dtype).unsqueeze(-1)  # (B, L, 1)
        text_pooled = (text * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        img_emb = F.normalize(self.image_proj(image.mean(1)), dim=-1)
        txt_emb = F.normalize(self.text_proj(text_pooled), dim=-1)
        logits = self.logit_scale.exp() * txt_emb @ img_emb.t()  # (B, B): text i vs image j
        target = torch.arange(b, device=logits.device)
        contrastive = 0.5 * (F.cross_entropy(logits, target)
                             + F.cross_entropy(logits.t(), target))
        fused = torch.cat([text, text])  # pairs (i, i) then (i, i + 1 mod B)
        context = torch.cat([image, image.roll(1, dims=0)])
        for block in self.fusion_blocks:
            fused = block(fused, context)
        itm_logits = self.itm_head(fused[:, 0])  # (2B, 2): the first (BOS) token
        labels = torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(b, dtype=torch.long)])
        matching = F.cross_entropy(itm_logits, labels.to(itm_logits.device))
        return Losses(contrastive + matching, contrastive, matching)

    def _check(self, images: Any, input_ids: Any, attention_mask: Any) -> None:
        c = self.config
        s = c.image_size
        if not isinstance(images, torch.Tensor) or images.dim() != 4 \
                or tuple(images.shape[1:]) != (3, s, s) or not images.is_floating_point():
            got = (f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                   else type(images).__name__)
            raise ValueError(f"images must be a float tensor (B, 3, {s}, {s}) (config.image_size"
                             f"={s}), got {got}")
        if images.shape[0] < 2:
            raise ValueError(f"batch size must be >= 2 (image-text matching takes its negative "
                             f"from another pair of the batch), got images {tuple(images.shape)}")
        for name, t in (("input_ids", input_ids), ("attention_mask", attention_mask)):
            if not isinstance(t, torch.Tensor) or t.dim() != 2 \
                    or t.shape[0] != images.shape[0] or not 1 <= t.shape[1] <= c.context_length:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must be a (B, L) tensor with B={images.shape[0]} (the "
                                 f"images' batch) and 1 <= L <= config.context_length="
                                 f"{c.context_length}, got {shape}")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input_ids must be int64 or int32 token ids, got {input_ids.dtype}")

    def with_backend(self, backend: str) -> ImageTextModel:
        """A new model with the same config and weights (copied) using ``backend``."""
        other = ImageTextModel(self.config, backend).to(self.image_pos.device)
        load_canonical(other, canonical_tensors(self))
        other.train(self.training)
        return other


# --- parameter layouts --------------------------------------------------------------------------
_PACKED = "inner.attention."


def canonical_tensors(model: nn.Module, grads: bool = False) -> dict[str, torch.Tensor]:
    """Parameters (or their ``.grad``, None skipped) under the projected layout's names: the
    packed ``inner.attention.in_proj_*`` of ``seed_sparse`` split into ``inner.q_proj.*``
    (rows :D) and ``inner.kv_proj.*`` (rows D:), ``out_proj`` renamed. Tensors are detached
    views, not copies."""
    out: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        t = param.grad if grads else param
        if t is None:
            continue
        t = t.detach()
        head, sep, tail = name.partition(_PACKED)
        if not sep:
            out[name] = t
        elif tail.startswith("in_proj_"):
            kind = tail.removeprefix("in_proj_")  # weight | bias
            d = t.shape[0] // 3
            out[f"{head}inner.q_proj.{kind}"], out[f"{head}inner.kv_proj.{kind}"] = t[:d], t[d:]
        else:  # out_proj.weight / out_proj.bias
            out[f"{head}inner.{tail}"] = t
    return out


def load_canonical(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` (names of :func:`canonical_tensors`) into ``model``'s parameters."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            head, sep, tail = name.partition(_PACKED)
            if not sep:
                param.copy_(tensors[name])
            elif tail.startswith("in_proj_"):
                kind = tail.removeprefix("in_proj_")
                param.copy_(torch.cat([tensors[f"{head}inner.q_proj.{kind}"],
                                       tensors[f"{head}inner.kv_proj.{kind}"]]))
            else:
                param.copy_(tensors[f"{head}inner.{tail}"])


# --- the step -----------------------------------------------------------------------------------
def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


def _unpack(batch: Any) -> TrainBatch:
    if isinstance(batch, TrainBatch):
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) == 3:
        return TrainBatch(*batch)
    raise TypeError(f"batch must be a TrainBatch (images, input_ids, attention_mask) or a "
                    f"3-tuple of tensors, got {type(batch).__name__}")


def train_step(model: ImageTextModel, batch: TrainBatch | tuple[torch.Tensor, ...],
               optimizer: torch.optim.Optimizer, *, precision: str = "fp32",
               scaler: torch.amp.GradScaler | None = None) -> float:
    """One optimisation step; returns the total loss (a host sync: ``.item()``).

    precision: ``"fp32"``; ``"bf16"`` (forward under ``torch.autocast`` to bfloat16, fp32
    weights and gradients; a speed-up only with native bf16, see
    ``pytest_mmperf.devices.has_native_bf16``); ``"fp16"`` (autocast to float16 and loss
    scaling through ``scaler``, a ``torch.amp.GradScaler("cuda")`` kept across steps; CUDA only).
    The mode (``train()`` / ``eval()``) is the caller's: ``seed_sparse`` applies its dropout in
    ``train()``. Gradients stay in ``.grad`` after the call (zeroed at the start of the next).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (ImageTextModel), got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    _check_choice(precision, PRECISIONS, "precision")
    images, input_ids, attention_mask = _unpack(batch)
    device = next(model.parameters()).device
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError(f"precision='fp16' needs a CUDA device (float16 autocast with "
                             f"GradScaler loss scaling); the model is on {device}; accepted "
                             f"there: 'fp32', 'bf16'")
        if not isinstance(scaler, torch.amp.GradScaler):
            raise ValueError(f"precision='fp16' needs scaler=torch.amp.GradScaler('cuda'), kept "
                             f"across steps; got scaler={scaler!r}")
    elif scaler is not None:
        raise ValueError(f"scaler is only used with precision='fp16' (float16 gradients "
                         f"underflow, bfloat16 and float32 ones do not); got precision="
                         f"{precision!r} with scaler={scaler!r}")
    with record_function("mmperf::optimizer"):
        optimizer.zero_grad(set_to_none=True)
    with record_function("mmperf::forward"), _autocast(precision, device):
        loss = model(images, input_ids, attention_mask).total
    with record_function("mmperf::backward"):
        (loss if scaler is None else scaler.scale(loss)).backward()
    with record_function("mmperf::optimizer"):
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
    return float(loss.detach())


def make_train_batch(config: ModelConfig, batch_size: int, seed: int = 0,
                     device: torch.device | str = "cpu") -> TrainBatch:
    """Seeded random batch for ``config``: images N(0, 1) (B, 3, S, S) float32, ids in
    [3, vocab) with 1 = BOS first, caption lengths in [L/4, L], padding 0."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an int >= 2, got {batch_size!r}")
    g = torch.Generator().manual_seed(seed)
    s, length = config.image_size, config.context_length
    images = torch.randn(batch_size, 3, s, s, generator=g)
    ids = torch.randint(3, config.vocab_size, (batch_size, length), generator=g)
    ids[:, 0] = 1
    lengths = torch.randint(max(1, length // 4), length + 1, (batch_size, 1), generator=g)
    mask = torch.arange(length).unsqueeze(0) < lengths
    ids = ids.masked_fill(~mask, 0)
    return TrainBatch(images.to(device), ids.to(device), mask.long().to(device))


# --- a loader feeding the step ------------------------------------------------------------------
@dataclass(frozen=True)
class LoaderTrainingResult:
    """What :func:`run_loader_training` measured over its timed steps.

    ``data_s``: seconds spent getting batches (waiting in ``next(loader)``, starting a new epoch
    and tokenising captions), ``step_s``: seconds in :func:`train_step`; ``wall_s`` = their sum.
    ``stall_fraction`` = data_s / wall_s: the share of the loop's time the model waits for data.
    Workers that decode while the step runs take cores from it, so a loader's cost shows up in
    ``step_s`` too: ``images_per_s`` is the end-to-end measure, the stall fraction its visible
    part.
    """

    steps: int
    images: int
    wall_s: float
    data_s: float
    step_s: float
    losses: tuple[float, ...]

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else math.inf

    @property
    def stall_fraction(self) -> float:
        return self.data_s / self.wall_s if self.wall_s > 0 else 0.0


def run_loader_training(loader: Iterable[Any], model: ImageTextModel,
                        optimizer: torch.optim.Optimizer,
                        tokenizer: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]], *,
                        steps: int, warmup_steps: int = 1, precision: str = "fp32"
                        ) -> LoaderTrainingResult:
    """Train ``steps`` steps on batches of ``loader`` and time where the loop's time goes.

    loader: iterable of (images float (B, 3, S, S), captions list of B str), e.g.
    :func:`reference.preprocess.make_seed_loader` or ``make_fast_loader``; restarted at the end
    of an epoch (persistent workers survive that). tokenizer: captions -> (input_ids (B, L),
    attention_mask (B, L)). The first ``warmup_steps`` steps (worker start-up, lazy kernel
    initialisation) are run but not timed. Workers share the machine's cores with the model's
    threads: nothing here pins or reserves them.
    """
    for name, value, low in (("steps", steps, 1), ("warmup_steps", warmup_steps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"run_loader_training: {name} must be an int >= {low}, "
                             f"got {value!r}")
    device = next(model.parameters()).device
    iterator = iter(loader)
    data_s = step_s = 0.0
    images = 0
    losses: list[float] = []
    for index in range(warmup_steps + steps):
        t0 = time.perf_counter()
        try:
            pixels, captions = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            pixels, captions = next(iterator)
        input_ids, attention_mask = tokenizer(list(captions))
        batch = TrainBatch(pixels.to(device), input_ids.to(device), attention_mask.to(device))
        t1 = time.perf_counter()
        loss = train_step(model, batch, optimizer, precision=precision)
        t2 = time.perf_counter()
        if index >= warmup_steps:
            data_s += t1 - t0
            step_s += t2 - t1
            images += int(pixels.shape[0])
            losses.append(loss)
    return LoaderTrainingResult(steps, images, data_s + step_s, data_s, step_s, tuple(losses))
