"""The ViT teacher: train one, import one saved with timm's names, save and load it as a bundle.

A teacher folder is a bundle of kind ``"teacher"`` with one part ``"teacher"`` (role "model";
config = the ViT's ``config_dict()``), so loading it checks every byte against the manifest's
sha256 and never unpickles. Its metadata records the dataset it was trained for and its
accuracy.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from coinfer.core.errors import IntegrityError, InvalidInput, NotFound

log = logging.getLogger(__name__)

KIND = "teacher"
PART = "teacher"
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.")
_MAX_BLOCKS = 1024
"""More blocks than any ViT has: a key naming a block beyond is a damaged file, not a model."""


@dataclass(frozen=True)
class TeacherPreset:
    """A named ViT size; the patch size follows the image size unless given."""

    embed_dim: int
    """Token width."""
    depth: int
    """Transformer blocks."""
    num_heads: int
    """Attention heads per block."""
    mlp_ratio: float = 4.0
    """MLP hidden width over embed_dim."""


PRESETS: dict[str, TeacherPreset] = {
    "vit-nano": TeacherPreset(embed_dim=64, depth=4, num_heads=4),
    "vit-micro": TeacherPreset(embed_dim=128, depth=6, num_heads=4),
    "vit-tiny": TeacherPreset(embed_dim=192, depth=6, num_heads=6),
    "vit-small": TeacherPreset(embed_dim=384, depth=8, num_heads=6),
    "vit-base": TeacherPreset(embed_dim=768, depth=12, num_heads=12),
}
"""Teacher sizes offered by ``coinfer teacher train --arch``."""

MIN_PATCH = 4
"""The smallest side a default patch has: a token of fewer pixels carries too little for its
embedding (8-px digits, vit-tiny, default budget: 2-px patches 0.82 test accuracy, 4-px 0.92)."""
PATCH_RULE = f"16 px from 64 px; below, a 4 x 4 grid of patches of at least {MIN_PATCH} px, else 2 x 2"
"""default_patch_size in words, for help texts and the teacher's metadata."""


def default_patch_size(image_size: int) -> int:
    """16 for images of 64 pixels and more (the usual ViT); smaller images get a 4 x 4 grid of
    patches where those are at least MIN_PATCH pixels wide, else a 2 x 2 grid, else one patch."""
    if image_size >= 64 and image_size % 16 == 0:
        return 16
    for p in (image_size // 4, image_size // 2):
        if p >= min(MIN_PATCH, image_size) and image_size % p == 0:
            return p
    return image_size


STEMS = ("patch", "conv")
"""How a trained teacher turns pixels into tokens: ``patch``, one patch_size convolution (the
usual ViT); ``conv``, a convolutional stem (:func:`conv_stem_channels`)."""
STEM_WIDTH = 24
"""Channels of a conv stem's first convolution; each next one doubles them, up to the token width."""


def check_stem(stem: str) -> None:
    """Raise naming the valid choices unless ``stem`` is one of STEMS."""
    if stem not in STEMS:
        raise InvalidInput(f"unknown stem {stem!r}; valid: {', '.join(STEMS)}")


def conv_stem_channels(image_size: int, patch_size: int, embed_dim: int) -> tuple[int, ...]:
    """The ``conv`` stem's channels: as many 3 x 3 stride-2 convolutions as turn the image into the
    patch grid, from STEM_WIDTH doubling (Xiao et al. 2021 build ViT_C's stem this way)."""
    from coinfer.core.models.vit import stem_depth

    depth = stem_depth(image_size, patch_size)
    if depth is None:
        raise InvalidInput(
            f"no stack of stride-2 convolutions turns {image_size}-px images into the "
            f"{image_size // patch_size} x {image_size // patch_size} grid of {patch_size}-px patches; "
            "take --stem patch or another --patch-size"
        )
    return tuple(min(STEM_WIDTH * 2**i, embed_dim) for i in range(depth))


def stem_choice(config) -> str:
    """The teacher's stem in words, for its metadata."""
    if not config.stem_channels:
        return f"patch: one {config.patch_size} x {config.patch_size} convolution"
    channels = ", ".join(map(str, config.stem_channels))
    return f"conv: 3 x 3 stride-2 convolutions of {channels} channels (batch norm, ReLU), then a 1 x 1 projection"


def patch_choice(image_size: int, patch_size: int | None) -> str:
    """Why the teacher has its patch size, for its metadata: given, or the default for the image."""
    if patch_size:
        return f"{patch_size} px, given"
    p = default_patch_size(image_size)
    return f"{p} px ({image_size // p} x {image_size // p} patches), the default for {image_size}-px images ({PATCH_RULE})"


def teacher_config(
    preset: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    patch_size: int | None = None,
    drop_path_rate: float = 0.1,
    stem: str = "patch",
    **overrides: Any,
):
    """The ViTConfig of a preset for images (C, H, W) and ``num_classes``; overrides win.

    ``stem`` is one of STEMS: ``conv`` puts :func:`conv_stem_channels` before the tokens."""
    from coinfer.core.models.vit import ViTConfig

    if preset not in PRESETS:
        raise NotFound(f"unknown teacher arch {preset!r}; valid: {', '.join(PRESETS)}")
    channels, height, width = image_shape
    if height != width:
        raise InvalidInput(f"the ViT takes square images, the dataset's are {height} x {width}")
    p = PRESETS[preset]
    values = dict(
        image_size=height,
        in_chans=channels,
        patch_size=patch_size or default_patch_size(height),
        embed_dim=p.embed_dim,
        depth=p.depth,
        num_heads=p.num_heads,
        mlp_ratio=p.mlp_ratio,
        num_classes=num_classes,
        drop_path_rate=drop_path_rate,
    )
    values.update({k: v for k, v in overrides.items() if v is not None})
    check_stem(stem)
    if stem == "conv" and values.get("stem_channels") is None:
        values["stem_channels"] = conv_stem_channels(height, values["patch_size"], values["embed_dim"])
    return ViTConfig(**values)


def train_teacher(splits, config, train):
    """A ViT of ``config`` (a ViTConfig) trained on ``splits`` with ``train`` (a core TrainConfig).

    Trains on ``train.device``; returns (model on the CPU, in evaluation mode, holding its best
    validation epoch, TrainResult).
    """
    import torch

    from coinfer.core.models.vit import VisionTransformer
    from coinfer.core.training import train_classifier

    check_compatible(config, splits)
    # Seed the initial weights too: train_classifier seeds only what happens after them. They are
    # drawn on the CPU, so a seed gives the same starting teacher whatever device trains it.
    torch.manual_seed(train.seed)
    model = VisionTransformer(config)
    result = train_classifier(model, splits, train)  # leaves the model on the CPU, in evaluation mode
    return model, result


def check_compatible(config, splits) -> None:
    """The teacher's classes, image size, channels and patches must fit the dataset; raise naming each mismatch."""
    channels, height, width = splits.image_shape
    problems = []
    if config.num_classes != splits.num_classes:
        problems.append(f"{config.num_classes} classes vs the dataset's {splits.num_classes}")
    if config.in_chans != channels:
        problems.append(f"{config.in_chans} input channel(s) vs the dataset's {channels}")
    if config.image_size != height or config.image_size != width:
        grid = config.image_size // config.patch_size
        problems.append(
            f"{config.image_size} x {config.image_size} images vs the dataset's {height} x {width} "
            f"(its position embedding holds {grid} x {grid} patches of {config.patch_size} px)"
        )
    if height % config.patch_size or width % config.patch_size:
        problems.append(f"its {config.patch_size}-px patches do not tile the dataset's {height} x {width} images")
    if problems:
        raise InvalidInput(f"the teacher does not fit dataset {splits.name!r}: " + "; ".join(problems))


def save_teacher(model, path: str | Path, metadata: Mapping[str, Any], overwrite: bool = False):
    """Write ``model`` as a teacher bundle at ``path`` (atomic)."""
    from coinfer.core.bundle import PartToWrite, TensorSpec, write_bundle

    cfg = model.config
    part = PartToWrite(
        name=PART,
        tensors=model.state_dict(),
        role="model",
        config=model.config_dict(),
        inputs=[TensorSpec("image", "FP32", (-1, cfg.in_chans, cfg.image_size, cfg.image_size))],
        outputs=[TensorSpec("logits", "FP32", (-1, cfg.num_classes))],
    )
    return write_bundle(path, name=Path(path).name, kind=KIND, parts=[part], metadata=dict(metadata), overwrite=overwrite)


def load_teacher(path: str | Path):
    """(model in eval mode, metadata) from a teacher folder; hashes are verified."""
    from coinfer.core.bundle import load_bundle
    from coinfer.core.models.vit import VisionTransformer

    bundle = load_bundle(path)
    if bundle.kind != KIND:
        raise InvalidInput(f"{path} is a {bundle.kind!r} bundle, not a teacher")
    model = bundle.load_module(PART)
    if not isinstance(model, VisionTransformer):
        raise InvalidInput(f"{path}: the teacher must be a ViT, got arch {bundle.part(PART).config.get('arch')!r}")
    if model.config.block_heads is not None or model.config.block_mlp_hidden is not None:
        raise InvalidInput(f"{path}: the teacher is already pruned; DEKD starts from a dense ViT")
    if model.config.num_classes < 2:
        raise InvalidInput(f"{path}: the teacher needs a classification head (num_classes >= 2)")
    return model, dict(bundle.metadata)


# Import ----------------------------------------------------------------------------------------


def import_teacher(
    source: str | Path,
    out: str | Path,
    *,
    num_heads: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Import a ViT state dict saved with timm's names (safetensors, or a torch state dict read
    with ``weights_only=True``) into a teacher folder at ``out``.

    ``num_heads`` defaults to timm's width / 64. With ``dataset`` (and ``data_dir`` where it
    needs one) the teacher is checked against that dataset and evaluated on its test split
    (split with ``seed``). What ``coinfer teacher import`` and ``coinfer.import_teacher`` run.
    Returns (the model in evaluation mode, the folder's metadata).
    """
    from coinfer.core.training import evaluate

    if Path(out).exists() and not overwrite:
        raise InvalidInput(f"{out} already exists; choose another folder or pass --overwrite")
    if num_heads is not None and (isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads <= 0):
        raise InvalidInput(f"the number of heads must be positive, got {num_heads!r}")
    model = import_timm_vit(source, num_heads)
    meta: dict[str, Any] = {"imported_from": str(source), "macs": model.macs(), "params": model.num_params()}
    if dataset:
        from coinfer.core.data import load_dataset

        splits = load_dataset(dataset, data_dir, seed=seed)
        check_compatible(model.config, splits)
        meta.update(dataset=splits.name, class_names=list(splits.class_names), image_shape=list(splits.image_shape),
                    test_accuracy=evaluate(model, splits.test))
    save_teacher(model, out, meta, overwrite=overwrite)
    return model, meta


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Tensors of a safetensors file, or of a torch checkpoint loaded with ``weights_only=True``.

    A checkpoint may hold the state dict itself or wrap it under "state_dict", "model" or
    "model_state"; a DistributedDataParallel "module." prefix is removed.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load as load_safetensors

        try:
            state = load_safetensors(path.read_bytes())
        except Exception as exc:  # safetensors raises its own error types on bad headers
            raise IntegrityError(f"{path}: not a valid safetensors file ({exc})") from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
            raise IntegrityError(
                f"{path}: not a readable torch state dict with weights_only=True "
                f"(corrupt, truncated, or holding objects other than tensors): {exc}"
            ) from exc
        for key in ("state_dict", "model", "model_state"):
            if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidInput(f"{path}: expected a mapping of parameter names to tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _block_count(state: Mapping[str, Any]) -> int:
    """1 + the highest block index named by any key, so a block missing one tensor still counts."""
    indices = [int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))]
    depth = 1 + max(indices) if indices else 0
    if depth > _MAX_BLOCKS:
        raise InvalidInput(f"a key names block {depth - 1}; a ViT teacher has at most {_MAX_BLOCKS} blocks")
    return depth


def _infer_vit_config(state: Mapping[str, Any], num_heads: int | None, source: str):
    """The ViTConfig the checkpoint's shapes describe.

    Widths are read from the blocks that hold the tensor in question; a block missing it is
    given the others' width, so that the key comparison lists the tensor as missing instead of
    the block being read as pruned.
    """
    from coinfer.core.models.vit import ViTConfig

    required = ("cls_token", "pos_embed", "patch_embed.proj.weight")
    missing = [k for k in required if k not in state]
    if missing:
        raise InvalidInput(f"{source}: not a timm ViT with a class token: missing {', '.join(missing)}")
    C = state["cls_token"].shape[-1]
    proj = state["patch_embed.proj.weight"]
    if proj.ndim != 4 or proj.shape[0] != C or proj.shape[2] != proj.shape[3]:
        raise InvalidInput(f"{source}: patch_embed.proj.weight has shape {tuple(proj.shape)}, expected ({C}, C_in, p, p)")
    patch = proj.shape[2]
    tokens = state["pos_embed"].shape[1]
    side = round((tokens - 1) ** 0.5)
    if side * side != tokens - 1:
        raise InvalidInput(f"{source}: pos_embed has {tokens} tokens, not 1 + a square number of patches")
    depth = _block_count(state)
    if depth == 0:
        raise InvalidInput(f"{source}: no transformer blocks (no key starts with 'blocks.0.')")
    heads = num_heads or max(1, C // 64)
    if C % heads:
        raise InvalidInput(f"{source}: embed_dim {C} is not divisible by {heads} heads; pass --num-heads")
    head_dim = C // heads

    def widths(key: str, per_row: int) -> list[int | None]:
        found = [state.get(f"blocks.{i}.{key}") for i in range(depth)]
        return [None if w is None else w.shape[0] // per_row for w in found]

    inner = widths("attn.qkv.weight", 3)
    mlp = widths("mlp.fc1.weight", 1)
    for i, width in enumerate(inner):
        if width is not None and width % head_dim:
            raise InvalidInput(f"{source}: block {i} attention width {width} is not a multiple of head_dim {head_dim}")
    usual_inner = next((w for w in inner if w is not None), C)
    usual_mlp = next((w for w in mlp if w is not None), 4 * C)
    block_heads = [(usual_inner if w is None else w) // head_dim for w in inner]
    block_mlp = [usual_mlp if w is None else w for w in mlp]
    head = state.get("head.weight", state.get("head.bias"))
    dense = all(h == heads for h in block_heads) and len(set(block_mlp)) == 1 and block_mlp[0] > 0
    return ViTConfig(
        image_size=side * patch,
        in_chans=proj.shape[1],
        patch_size=patch,
        embed_dim=C,
        depth=depth,
        num_heads=heads,
        mlp_ratio=(block_mlp[0] / C) if dense else 4.0,
        num_classes=0 if head is None else head.shape[0],
        qkv_bias=any(k.endswith(".attn.qkv.bias") for k in state),
        head_dim=head_dim,
        block_heads=None if dense else tuple(block_heads),
        block_mlp_hidden=None if dense else tuple(block_mlp),
    )


def _key_problems(state: Mapping[str, Any], model, source: str) -> str | None:
    """Every missing and unexpected key, then every tensor of the wrong shape; None when the state fits."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    if missing or unexpected:
        lines = []
        if missing:
            lines.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        cfg = model.config
        return f"{source} does not fit our ViT ({cfg.depth} blocks, width {cfg.embed_dim}): " + "; ".join(lines)
    wrong = [f"{k} {tuple(state[k].shape)} (expected {shapes[k]})" for k in sorted(shapes) if tuple(state[k].shape) != shapes[k]]
    if wrong:
        return f"{source}: tensors of the wrong shape: {', '.join(wrong)}"
    return None


def import_timm_vit(path: str | Path, num_heads: int | None = None):
    """Our ViT (eval mode) holding a timm-named state dict; missing or unexpected keys raise, listing them all.

    Shapes give every size but the head count; ``num_heads`` defaults to timm's width / 64.
    """
    from coinfer.core.models.vit import VisionTransformer

    state = read_state_dict(path)
    config = _infer_vit_config(state, num_heads, str(path))
    model = VisionTransformer(config)
    problem = _key_problems(state, model, str(path))
    if problem:
        raise InvalidInput(problem)
    if config.num_classes == 0:
        raise InvalidInput(f"{path}: the checkpoint has no classification head ('head.weight'); a teacher needs one")
    if config.block_heads is not None or config.block_mlp_hidden is not None:
        raise InvalidInput(f"{path}: the checkpoint is a pruned ViT (blocks of different widths); a teacher must be dense")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()
