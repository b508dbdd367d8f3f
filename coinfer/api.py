"""The jobs of the ``coinfer`` command that need more than one call into a role package.

`coinfer` exports these with the role functions it re-exports as they are (`import_teacher`,
`serve`, `start_edge`, `InferenceClient`). Each is a thin wrapper over what the command's
handler calls, so the command and the Python API run the same code; every option means what the
flag of the same name says (``coinfer <command> --help``). Heavy imports (torch) happen inside
the functions, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from coinfer.core.profile import DeviceProfile
    from coinfer.edge.energy import CpuPowerModel
    from coinfer.server.dekd.report import DEKDReport
    from coinfer.server.split.report import SplitReport


def train_teacher(out: str | Path, **options: Any) -> tuple[Any, dict[str, Any]]:
    """Train a ViT teacher for DEKD and write it to ``out`` (``coinfer teacher train``).

    ``options`` are those of :func:`coinfer.server.dekd.jobs.train_teacher_job` (dataset, arch,
    budget or epochs / steps, lr, batch_size, device, ...): the recipe adapts its steps to the
    data unless told otherwise, and the metadata's ``recipe`` says what it chose and why.
    Returns (the model, on the CPU in evaluation mode; its metadata, as ``load_teacher`` reads it).
    """
    from coinfer.server.dekd.jobs import train_teacher_job

    run = train_teacher_job(out=out, **options)
    return run.model, run.metadata


def decompose(out: str | Path, **options: Any) -> DEKDReport:
    """DEKD: decompose a ViT teacher into sub-models and a fusion head; write the DeViT bundle to ``out``.

    ``options`` are those of :func:`coinfer.server.dekd.jobs.decompose_job` (teacher: a teacher
    folder, or None to train one first; dataset, devices, device_speeds as a list or
    "1,1,0.5,0.5", budget "quick" | "default" | "thorough", the ``*_epochs`` overrides, device,
    ...). Returns the report (also written as ``out``/report.json); the report's ``recipe`` says
    which steps each stage took and why.
    """
    from coinfer.server.dekd.jobs import decompose_job

    return decompose_job(out=out, **options)


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
