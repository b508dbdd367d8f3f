"""One DEKD stage under torchrun (run by test_dekd_ddp.py): sub-task distillation of one sub-model.

Every rank writes what it saw to OUT/rank{r}.json: the gathered teacher targets checked against a
local computation, its training curve, the steps and samples its training took, and a checksum of
the trained weights. Run without torchrun, it writes the same for one process.
"""

import json
import sys
from pathlib import Path

import torch

from coinfer.core.data import load_dataset
from coinfer.core.measure import accuracy, predict
from coinfer.core.models.vit import VisionTransformer, ViTConfig
from coinfer.server.dekd.distill import DistillConfig, distill_submodel, group_rows
from coinfer.core.training import TrainConfig
from coinfer.core.parallel import world
from coinfer.server.dekd.prune import PrunePlan, build_pruned_vit
from coinfer.server.dekd.targets import compute_targets


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rank, size = world()
    splits = load_dataset("digits")
    torch.manual_seed(0)  # the same teacher on every rank
    teacher = VisionTransformer(ViTConfig(image_size=8, in_chans=1, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10)).eval()
    x, y = splits.train.tensors()
    xv, yv = splits.val.tensors()
    group = [1, 4, 7]
    idx, local = group_rows(y, group)
    vidx, vlocal = group_rows(yv, group)
    targets = compute_targets(teacher, x[idx], with_relations=True)
    with torch.no_grad():
        local_out = teacher.forward_with_qkv(x[idx], [])
    gathered_ok = torch.allclose(targets.logits, local_out.logits, atol=1e-5) and len(targets.relations) == len(idx)
    targets.logits = targets.logits[:, group]
    plan = PrunePlan((0, 1), ((0,), (1,)), (tuple(range(32)), tuple(range(32))))
    torch.manual_seed(1 + rank)  # different starting weights per rank: DDP must align them
    student = build_pruned_vit(teacher, plan, classes=group)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before = accuracy(predict(student, xv[vidx]), vlocal.numpy())
    result = distill_submodel(
        student, x[idx], local, targets, xv[vidx], vlocal,
        DistillConfig(loop=TrainConfig(epochs=3, batch_size=32, lr=3e-3, warmup_epochs=0.3, progress=False)),
    )
    checksum = float(sum(p.double().sum() for p in student.parameters()))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world": size, "gathered_ok": bool(gathered_ok),
        "losses": result.train_loss_per_epoch, "val": result.val_accuracy_per_epoch,
        "before": before, "checksum": checksum, "steps": result.steps, "samples_seen": result.samples_seen,
        "planned_steps": result.plan.steps,
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
