"""The jobs of the ``coinfer`` command that need more than one call into a role package.

`coinfer` exports these with the role functions it re-exports as they are (`import_teacher`,
`serve`, `start_edge`, `InferenceClient`). Each is a thin wrapper over what the command's
handler calls, so the command and the Python API run the same code; every option means what the
flag of the same name says (``coinfer <command> --help``). Heavy imports (torch) happen inside
the functions, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from coinfer.core.profile import DeviceProfile
    from coinfer.edge.energy import CpuPowerModel
    from coinfer.server.dekd.report import DEKDReport
    from coinfer.server.split.report import SplitReport


def train_teacher(
    out: str | Path | None,
    *,
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    arch: str = "vit-tiny",
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    patch_size: int | None = None,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    drop_path: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Train a ViT teacher for DEKD on ``dataset`` (its best validation epoch kept), and write it to ``out``.

    ``arch`` is a size preset (vit-nano .. vit-base; ``embed_dim``, ``depth``, ``num_heads``
    override it); ``device`` is cpu, cuda or auto, and the teacher comes back on the CPU either
    way. ``out`` None keeps the teacher in memory only. Returns (the model in evaluation mode, its
    metadata: dataset, classes, accuracies, size, training record), as ``load_teacher`` reads them.
    """
    from coinfer.core.data import load_dataset
    from coinfer.core.device import resolve_device
    from coinfer.core.errors import InvalidInput
    from coinfer.core.training import TrainConfig, evaluate
    from coinfer.server.dekd import teacher as teachers

    resolved = resolve_device(device)
    if out is not None and Path(out).exists() and not overwrite:
        raise InvalidInput(f"{out} already exists; choose another folder or pass overwrite=True")
    splits = load_dataset(dataset, data_dir, seed=seed)
    config = teachers.teacher_config(
        arch, splits.image_shape, splits.num_classes, patch_size=patch_size, drop_path_rate=drop_path,
        embed_dim=embed_dim, depth=depth, num_heads=num_heads,
    )
    train = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=progress, desc=f"teacher {arch}", device=str(resolved))
    started = time.perf_counter()
    model, result = teachers.train_teacher(splits, config, train)
    test_accuracy = evaluate(model, splits.test)
    meta = teachers.trained_metadata(model, splits, arch, result, test_accuracy, time.perf_counter() - started, str(resolved))
    if out is not None:
        teachers.save_teacher(model, out, meta, overwrite=overwrite)
    return model, meta


def decompose(
    out: str | Path | None,
    *,
    teacher: Any = None,
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    devices: int = 4,
    device_speeds: str | Sequence[float | str] | None = None,
    partition: str = "affinity",
    quick: bool = False,
    macs_ratio: float | None = None,
    distill_epochs: int | None = None,
    ensemble_epochs: int | None = None,
    baseline_epochs: int | None = None,
    baseline: bool = True,
    baseline_init: str = "scratch",
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> DEKDReport:
    """DEKD: decompose a ViT teacher into ``devices`` sub-models and a fusion head; write the DeViT bundle to ``out``.

    ``teacher`` is a teacher folder (`train_teacher`, `import_teacher`), a ViT model, or None to
    train the default teacher first (the same recipe as ``coinfer decompose`` without
    ``--teacher``). ``device_speeds`` are relative speeds or device profiles (names or
    coinfer.profile/1 files), a sequence or comma-separated; ``quick`` is the short preset of the
    digits demo, and the epoch options override a preset's. ``out`` None measures without writing.
    Returns the report (also written as ``out``/report.json).
    """
    import torch

    from coinfer.core.data import load_dataset
    from coinfer.core.errors import InvalidInput
    from coinfer.server.dekd.config import preset
    from coinfer.server.dekd.partition import check_group_count
    from coinfer.server.dekd.pipeline import decompose as run_dekd
    from coinfer.server.dekd.speeds import parse_device_speeds
    from coinfer.server.dekd.teacher import check_compatible, load_teacher, train_default_teacher

    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 2:
        raise InvalidInput(f"devices must be an integer of at least 2, got {devices!r}")
    if out is not None and Path(out).exists() and not overwrite:
        raise InvalidInput(f"{out} already exists; choose another folder or pass overwrite=True")
    if device_speeds is not None and not isinstance(device_speeds, str):
        device_speeds = ",".join(str(s) for s in device_speeds)
    speeds = parse_device_speeds(device_speeds, devices)
    config = preset(
        "quick" if quick else "default", num_devices=devices, partition=partition, device_speeds=tuple(speeds),
        seed=seed, progress=progress, baseline=baseline, baseline_init=baseline_init,
    )
    if macs_ratio is not None:
        if not 0 < macs_ratio <= 1:
            raise InvalidInput(f"macs_ratio must be in (0, 1], got {macs_ratio}")
        config.macs_ratio = macs_ratio
    for loop, epochs in ((config.distill.loop, distill_epochs), (config.ensemble.loop, ensemble_epochs),
                         (config.baseline.loop if config.baseline else None, baseline_epochs)):
        if epochs is not None and loop is not None:
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
                raise InvalidInput(f"epochs must be positive integers, got {epochs!r}")
            loop.epochs = epochs
    teacher_meta: dict[str, Any] = {}
    if isinstance(teacher, (str, Path)):
        teacher, teacher_meta = load_teacher(teacher)
    splits = load_dataset(dataset, data_dir, seed=seed)
    check_group_count(splits.num_classes, devices)
    if teacher is None:
        teacher = train_default_teacher(splits, quick=quick, seed=seed)
    check_compatible(teacher.config, splits)
    torch.manual_seed(seed)
    return run_dekd(teacher, splits, config, out=out, overwrite=overwrite, metadata={"teacher_metadata": teacher_meta})


def split(
    out: str | Path,
    backbone: str = "resnet18",
    *,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    points: Sequence[int | str] | None = None,
    bits: int | None = None,
    compression: float | None = None,
    bottleneck: str | None = None,
    zlib: bool = True,
    width_mult: float | None = None,
    weights: str | Path | None = None,
    epochs: int | None = None,
    recon_steps: int | None = None,
    distill_steps: int | None = None,
    finetune_steps: int | None = None,
    max_train_images: int | None = None,
    test_images: int | None = None,
    seed: int | None = None,
    device: str = "cpu",
    quick: bool = False,
    threads: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> SplitReport:
    """Train ``backbone`` and an autoencoder bottleneck at each split point; write the split bundle to ``out``.

    Options left None keep the preset's value (``quick``: digits, short training). ``threads``
    sets torch's threads for the run, process-wide (these small models train fastest on 1;
    None leaves them). Returns the report (also written as ``out``/report.json).
    """
    from coinfer.server.split import cli as split_cli
    from coinfer.server.split.pipeline import run_split

    # The command's own translation of its options into a SplitConfig, from its defaults.
    args = _command_defaults(split_cli.register, "split", "--out", str(out))
    for name, value in dict(
        backbone=backbone, dataset=dataset, data_dir=None if data_dir is None else str(data_dir), bits=bits,
        compression=compression, bottleneck=bottleneck, width_mult=width_mult, weights=None if weights is None else str(weights),
        epochs=epochs, recon_steps=recon_steps, distill_steps=distill_steps, finetune_steps=finetune_steps,
        max_train_images=max_train_images, test_images=test_images, seed=seed, device=device, quick=quick,
        overwrite=overwrite, no_zlib=not zlib, no_progress=not progress,
        points=None if points is None else [str(p) for p in points],
    ).items():
        setattr(args, name, value)
    config = split_cli.config_from_args(args)
    if threads is not None:
        from coinfer.serving.cli_options import set_torch_threads

        set_torch_threads(threads)
    return run_split(config, out)


def profile(
    bundle: str | Path,
    out: str | Path | None = None,
    *,
    threads: int = 1,
    repeats: int = 30,
    warmup: int = 5,
    energy_window_s: float = 0.5,
    energy: str = "auto",
    power_model: str | Path | CpuPowerModel | None = None,
    name: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> DeviceProfile:
    """Measure every split point of a split bundle on this machine: latency, power, energy, wire bytes.

    ``energy`` is auto (RAPL counters where readable, else the power model), measured or
    modelled; ``power_model`` is a preset name (server-core, laptop-core, jetson-nano), a JSON
    file or a `CpuPowerModel`. Writes the coinfer.profile/1 file to ``out`` when given; returns the profile.
    """
    from coinfer.edge.energy import load_power_model
    from coinfer.edge.profiling import ProfileConfig, profile_bundle

    config = ProfileConfig(
        threads=threads, warmup=warmup, repeats=repeats, energy_window_s=energy_window_s,
        power_model=load_power_model(str(power_model)) if isinstance(power_model, (str, Path)) else power_model, energy=energy,
        name=name, device=device, progress=progress,
    )
    result = profile_bundle(bundle, config)
    if out is not None:
        result.save(out)
    return result


def _command_defaults(register: Any, *argv: str) -> argparse.Namespace:
    """The namespace a command's parser gives ``argv``: every option at its default."""
    parser = argparse.ArgumentParser(prog="coinfer")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))
