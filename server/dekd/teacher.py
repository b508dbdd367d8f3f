"""The ViT teacher: train one, import one saved with timm's names, save and load it as a bundle.

A teacher folder is a bundle of kind ``"teacher"`` with one part ``"teacher"`` (role "model";
config = the ViT's ``config_dict()``), so loading it checks every byte against the manifest's
sha256 and never unpickles. Its metadata records the dataset it was trained for and its
accuracy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from coinfer.core.errors import IntegrityError, InvalidInput, NotFound

log = logging.getLogger(__name__)

KIND = "teacher"
PART = "teacher"


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

DEFAULT_TEACHER = dict(arch="vit-tiny", epochs=10, lr=1e-3, batch_size=128, drop_path_rate=0.1)
"""The teacher ``decompose`` trains first when it is given none."""
QUICK_TEACHER = dict(arch="vit-nano", epochs=30, lr=3e-3, batch_size=32, drop_path_rate=0.0)
"""The same for ``decompose --quick`` (the digits demo path)."""


def default_patch_size(image_size: int) -> int:
    """16 for images of 64 pixels and more (the usual ViT), else a quarter of the side (4 x 4 patches)."""
    if image_size >= 64 and image_size % 16 == 0:
        return 16
    for p in (image_size // 4, image_size // 2, 1):
        if p >= 1 and image_size % p == 0:
            return p
    return 1


def teacher_config(
    preset: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    patch_size: int | None = None,
    drop_path_rate: float = 0.1,
    **overrides: Any,
):
    """The ViTConfig of a preset for images (C, H, W) and ``num_classes``; overrides win."""
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


def train_default_teacher(splits, quick: bool = False, seed: int = 0):
    """The teacher DEKD starts from when it is given none: `DEFAULT_TEACHER` (or `QUICK_TEACHER`) trained on ``splits``.

    Returns the model (on the CPU, in evaluation mode). ``coinfer decompose`` and
    ``coinfer.decompose`` call this when no teacher is given.
    """
    from coinfer.core.training import TrainConfig
    from coinfer.server.dekd.parallel import is_main

    recipe = QUICK_TEACHER if quick else DEFAULT_TEACHER
    if is_main():
        log.info("no teacher given: training a %s teacher on %s first (%d epochs)", recipe["arch"], splits.name, recipe["epochs"])
    config = teacher_config(recipe["arch"], splits.image_shape, splits.num_classes, drop_path_rate=recipe["drop_path_rate"])
    train = TrainConfig(epochs=recipe["epochs"], lr=recipe["lr"], batch_size=recipe["batch_size"], warmup_epochs=2, seed=seed, desc="teacher")
    model, _ = train_teacher(splits, config, train)
    return model


def trained_metadata(model, splits, arch: str, result, test_accuracy: float, train_seconds: float, device: str) -> dict[str, Any]:
    """The metadata of a trained teacher's folder: its data, size, accuracies and training record."""
    import torch

    return {
        "dataset": splits.name,
        "class_names": list(splits.class_names),
        "image_shape": list(splits.image_shape),
        "arch": arch,
        "val_accuracy": result.best_val_accuracy,
        "test_accuracy": test_accuracy,
        "best_epoch": result.best_epoch,
        "val_accuracy_per_epoch": result.val_accuracy_per_epoch,
        "train_seconds": round(train_seconds, 1),
        "train_device": device,
        "macs": model.macs(),
        "params": model.num_params(),
        "torch_version": torch.__version__,
    }


def check_compatible(config, splits) -> None:
    """The teacher's classes, image size and channels must be the dataset's; raise naming each mismatch."""
    channels, height, width = splits.image_shape
    problems = []
    if config.num_classes != splits.num_classes:
        problems.append(f"{config.num_classes} classes vs the dataset's {splits.num_classes}")
    if config.in_chans != channels:
        problems.append(f"{config.in_chans} input channel(s) vs the dataset's {channels}")
    if config.image_size != height or config.image_size != width:
        problems.append(f"{config.image_size} x {config.image_size} images vs the dataset's {height} x {width}")
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


def _infer_vit_config(state: Mapping[str, Any], num_heads: int | None, source: str):
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
    depth = 0
    while f"blocks.{depth}.attn.qkv.weight" in state:
        depth += 1
    if depth == 0:
        raise InvalidInput(f"{source}: no transformer blocks (blocks.0.attn.qkv.weight missing)")
    heads = num_heads or max(1, C // 64)
    if C % heads:
        raise InvalidInput(f"{source}: embed_dim {C} is not divisible by {heads} heads; pass --num-heads")
    head_dim = C // heads
    block_heads, block_mlp = [], []
    for i in range(depth):
        inner = state[f"blocks.{i}.attn.qkv.weight"].shape[0] // 3
        if inner % head_dim:
            raise InvalidInput(f"{source}: block {i} attention width {inner} is not a multiple of head_dim {head_dim}")
        block_heads.append(inner // head_dim)
        fc1 = state.get(f"blocks.{i}.mlp.fc1.weight")
        block_mlp.append(0 if fc1 is None else fc1.shape[0])
    head = state.get("head.weight")
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
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        head_dim=head_dim,
        block_heads=None if dense else tuple(block_heads),
        block_mlp_hidden=None if dense else tuple(block_mlp),
    )


def import_timm_vit(path: str | Path, num_heads: int | None = None):
    """Our ViT (eval mode) holding a timm-named state dict; missing or unexpected keys raise, listing them all.

    Shapes give every size but the head count; ``num_heads`` defaults to timm's width / 64.
    """
    from coinfer.core.models.vit import VisionTransformer

    state = read_state_dict(path)
    config = _infer_vit_config(state, num_heads, str(path))
    if config.num_classes == 0:
        raise InvalidInput(f"{path}: the checkpoint has no classification head ('head.weight'); a teacher needs one")
    if config.block_heads is not None or config.block_mlp_hidden is not None:
        raise InvalidInput(f"{path}: the checkpoint is a pruned ViT (blocks of different widths); a teacher must be dense")
    model = VisionTransformer(config)
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        lines = []
        if missing:
            lines.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        raise InvalidInput(f"{path} does not fit our ViT ({config.depth} blocks, width {config.embed_dim}): " + "; ".join(lines))
    shapes = model.state_dict()
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(shapes[k].shape)})" for k in sorted(expected) if state[k].shape != shapes[k].shape]
    if wrong:
        raise InvalidInput(f"{path}: tensors of the wrong shape: {', '.join(wrong)}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()
