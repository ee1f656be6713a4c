"""Training loops for every mode, readable top to bottom.

Modes (docs/training.md has the long version):

* ``baseline``  image encoder + head on images alone.
* ``teacher``   the fused guidance network, trained and evaluated with text (an upper bound
                that needs text at inference).
* ``guidance``  stage 1 trains the fused network (text guides the image encoder through the
                attention map); stage 2 ("adapt") keeps that encoder, puts a fresh head on it
                and fine-tunes on images alone. The result has the baseline's architecture.
* ``distill``   an image-only student (baseline architecture) trained on the labels and on
                the soft labels of a fused teacher (cross-modal distillation; Hoffman et al.
                2016, Lopez-Paz et al. 2016). The teacher is trained first, or read from
                ``--teacher RUN_DIR``.

Model selection and the decision threshold use ``val`` only; ``test`` is read once at the end.
One process on a CPU, or many under ``torchrun`` (DDP): the same code.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from framewatch.training.config import TrainConfig
from framewatch.training.data import Dataset, SplitData, load_dataset, stratified_subset
from framewatch.training.distributed import DDPAdapter, Placement, average_buffers, place, seed_everything
from framewatch.training.leakage import refuse_leakage
from framewatch.training.loader import LoaderPlan, SplitLoader, batch_indices, flip_batch, plan_loader
from framewatch.training.metrics import binary_metrics, choose_threshold
from framewatch.training.models import (
    FusionConfig,
    GuidanceNetwork,
    ImageClassifier,
    build_image_encoder,
    build_text_encoder,
)
from framewatch.training.models.encoders import TextEncoder, image_data_config
from framewatch.training.preprocess import Preprocess
from framewatch.training.runs import CHECKPOINT_DIR, RunError, save_run, variant_name
from framewatch.training.textcache import cached_text

TEXT_MODULE = "text_encoder"  # the fused network's submodule name for a text encoder that trains


# --- batches -----------------------------------------------------------------------------

@dataclass
class SplitTensors:
    """One split ready for the loops: its pixel source, labels and (when needed) text."""

    data: SplitData
    pixels: SplitLoader | torch.Tensor  # a tensor: the frames in memory (tests, small tools)
    labels: torch.Tensor
    text_features: torch.Tensor | None = None  # frozen text: computed once
    input_ids: torch.Tensor | None = None  # trained text: tokenised once
    attention_mask: torch.Tensor | None = None
    teacher_probs: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.loader = self.pixels if isinstance(self.pixels, SplitLoader) else SplitLoader.in_memory(self.data, self.pixels)

    def __len__(self) -> int:
        return len(self.labels)


def batches(split: SplitTensors, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
            rank: int = 0, world: int = 1, augment_seed: tuple[int, int] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Batches in :func:`~framewatch.training.loader.batch_indices` order, decoded by the split's loader."""
    order = batch_indices(len(split), batch_size, shuffle, generator, rank, world)
    for idx, pixels in split.loader(order, augment_seed):
        batch = {"pixels": pixels, "labels": split.labels[idx]}
        for name in ("text_features", "input_ids", "attention_mask", "teacher_probs"):
            value = getattr(split, name)
            if value is not None:
                batch[name] = value[idx]
        yield batch


# --- one stage ---------------------------------------------------------------------------

ForwardFn = Callable[[dict[str, torch.Tensor], bool], torch.Tensor]
LossFn = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class StageResult:
    name: str
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_auc: float
    history: list[dict[str, Any]] = field(default_factory=list)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1000 + epoch


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@torch.no_grad()
def predict(model: nn.Module, forward: ForwardFn, split: SplitTensors, batch_size: int, device: torch.device) -> tuple[np.ndarray, float]:
    """Softmax probabilities (N×C) and mean cross-entropy on a split."""
    model.eval()
    probs, losses = [], []
    for batch in batches(split, batch_size, shuffle=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device):
            logits = forward(batch, False).float()
        losses.append(F.cross_entropy(logits, batch["labels"], reduction="sum").item())
        probs.append(logits.softmax(-1).cpu().numpy())
    return np.concatenate(probs), sum(losses) / max(len(split), 1)


def autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


# The image encoder's parameters, in the image-only and the fused network.
ENCODER_MODULES = ("encoder.", "image_encoder.")


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: new layers at ``lr``, the image encoder at ``encoder_lr``
    (a pretrained encoder wants a smaller step than a fresh head), a trained text encoder at ``text_lr``."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    text = [p for n, p in named if n.startswith(TEXT_MODULE + ".")]
    encoder = [p for n, p in named if n.startswith(ENCODER_MODULES)]
    other = [p for n, p in named if not n.startswith((TEXT_MODULE + ".", *ENCODER_MODULES))]
    groups = [{"params": other, "lr": cfg.lr}, {"params": encoder, "lr": cfg.encoder_lr or cfg.lr}]
    groups += [{"params": text, "lr": cfg.text_lr}] if text else []
    groups = [group for group in groups if group["params"]]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def run_stage(
    name: str, model: nn.Module, forward: ForwardFn, loss_fn: LossFn, train: SplitTensors, val: SplitTensors,
    cfg: TrainConfig, epochs: int, rt: Placement, violent_index: int, checkpoint: Path, progress: Any,
    frozen: tuple[nn.Module, ...] = (), start_val_auc: float = -1.0,
) -> StageResult:
    """Train ``model`` for up to ``epochs``, keep the state with the best validation ROC-AUC.

    ``frozen`` modules get no gradient and stay in eval mode (their BatchNorm statistics too).
    ``start_val_auc`` is the starting state's own val ROC-AUC: an epoch must beat it to be kept.
    """
    for module in frozen:
        module.requires_grad_(False)
    optimizer = make_optimizer(model, cfg)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    steps_per_epoch = math.ceil(len(train) / rt.world / cfg.batch_size)
    total = steps_per_epoch * epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total, int(total * cfg.warmup_fraction)))
    trained: nn.Module = model
    if rt.world > 1:
        device_ids = [rt.device.index] if rt.device.type == "cuda" else None
        # The attention pool's value/output projections never reach the loss (only its map does).
        trained = nn.parallel.DistributedDataParallel(DDPAdapter(model, forward), device_ids=device_ids, find_unused_parameters=True)
    result = StageResult(name, {k: v.detach().clone() for k, v in model.state_dict().items()}, 0, start_val_auc)
    start_epoch, stale = 1, 0
    if cfg.resume and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if saved["stage"] == name:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            result = StageResult(name, saved["best_state"], saved["best_epoch"], saved["best_val_auc"], saved["history"])
            start_epoch, stale = saved["epoch"] + 1, saved["stale"]
            torch.set_rng_state(saved["rng"])
    generator = torch.Generator()
    task = progress.add_task(f"{name}", total=steps_per_epoch * (epochs - start_epoch + 1))
    for epoch in range(start_epoch, epochs + 1):
        # The data order and the flips depend on the seed and the epoch only, not on the stage or the
        # mode: at one seed every variant sees the same batches, so seeds pair the variants.
        generator.manual_seed(epoch_seed(cfg.seed, epoch))
        model.train()
        for module in frozen:
            module.eval()
        running, seen, steps = 0.0, 0, 0
        stream_seed = (cfg.seed, epoch) if cfg.augment == "stream" else None
        for batch in batches(train, cfg.batch_size, shuffle=True, generator=generator, rank=rt.rank, world=rt.world, augment_seed=stream_seed):
            if cfg.augment == "flip":
                batch["pixels"] = flip_batch(batch["pixels"], generator)
            batch = {k: v.to(rt.device) for k, v in batch.items()}
            with autocast(rt.device):
                logits = forward_with(trained, forward, batch)
            loss = loss_fn(logits.float(), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            running += loss.item() * len(batch["labels"])
            seen += len(batch["labels"])
            steps += 1
            progress.update(task, advance=1, description=f"{name} epoch {epoch}/{epochs} loss {running / seen:.4f}")
        if rt.world > 1:
            average_buffers(model, rt.world)  # every rank validates, and stops early, on the same model
        probs, val_loss = predict(model, forward, val, cfg.batch_size * 2, rt.device)
        val_scores = probs[:, violent_index]
        val_labels = (val.labels.numpy() == violent_index).astype(np.int64)
        diverged = not np.isfinite(val_scores).all()
        # A diverged epoch (non-finite outputs) is never selected; the best finite state is kept.
        auc = float("nan") if diverged else float(binary_metrics(val_labels, val_scores, 0.5)["roc_auc"])  # type: ignore[arg-type]
        row = {"stage": name, "epoch": epoch, "steps": steps, "train_loss": running / max(seen, 1), "val_loss": val_loss, "val_roc_auc": auc,
               "lr": scheduler.get_last_lr()[0], "diverged": diverged}
        result.history.append(row)
        progress.update(task, description=f"{name} epoch {epoch}/{epochs} loss {row['train_loss']:.4f} val auc {auc:.3f}")
        if auc > result.best_val_auc:
            result.best_val_auc, result.best_epoch, stale = auc, epoch, 0
            result.best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if rt.main:
            torch.save({"stage": name, "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "best_state": result.best_state, "best_epoch": result.best_epoch,
                        "best_val_auc": result.best_val_auc, "history": result.history, "stale": stale,
                        "rng": torch.get_rng_state()}, checkpoint)
        if stale >= cfg.patience:
            break
    progress.remove_task(task)
    model.load_state_dict(result.best_state)
    for module in frozen:
        module.requires_grad_(True)
    return result


def forward_with(module: nn.Module, forward: ForwardFn, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    # Under DDP the wrapper's own __call__ must run so that gradients are all-reduced.
    if isinstance(module, nn.parallel.DistributedDataParallel):
        out: torch.Tensor = module(batch)
        return out
    return forward(batch, True)


# --- the modes ---------------------------------------------------------------------------

def ce_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(logits, batch["labels"])


def soft_targets(teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's probabilities at temperature T: softmax(teacher logits / T). The stored
    probabilities are softmax(logits) at T = 1, and log p = logits − a constant per row, which
    softmax ignores, so softmax(log p / T) is exactly the teacher at T."""
    return F.softmax(torch.log(teacher_probs.clamp_min(1e-12)) / temperature, -1)


def distill_loss(alpha: float, temperature: float) -> LossFn:
    """Hinton et al.'s loss: both sides at temperature T (a student at T against targets at 1
    would learn logit gaps T times the teacher's), the soft term scaled by T²."""

    def loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hard = F.cross_entropy(logits, batch["labels"])
        targets = soft_targets(batch["teacher_probs"], temperature)
        soft = F.kl_div(F.log_softmax(logits / temperature, -1), targets, reduction="batchmean")
        return alpha * hard + (1 - alpha) * temperature**2 * soft

    return loss


@dataclass
class Prepared:
    dataset: Dataset
    preprocess: Preprocess
    splits: dict[str, SplitTensors]
    text: TextEncoder | None
    loader: LoaderPlan | None = None
    text_cache: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for split in self.splits.values():
            split.loader.close()


def prepare(cfg: TrainConfig, rt: Placement, needs_text: bool) -> Prepared:
    # Image headers are not read here (16 s for 50 000 files): a file that does not decode is dropped
    # by the loader, counted against max_bad_fraction and listed in metrics.json (data.unreadable).
    dataset = load_dataset(cfg.data, cfg.image_size, cfg.max_bad_fraction, positive_label=cfg.positive_label, needs_text=needs_text,
                           check_images=False)
    if not cfg.allow_leakage:
        refuse_leakage(dataset)  # the cheap part of `framewatch data check`: the same image in two splits
    if cfg.train_size is not None:  # after validation is carved: a smaller training set never shrinks val
        dataset.splits["train"] = stratified_subset(dataset.splits["train"], cfg.train_size, cfg.seed)
    probe = build_image_encoder(cfg.image_encoder, pretrained=False)
    data_cfg = image_data_config(probe)
    preprocess = Preprocess(data_cfg["mean"], data_cfg["std"]).to(rt.device)  # type: ignore[arg-type]
    plan = plan_loader(list(dataset.splits.values()), cfg.loader, cfg.cache_mb, cfg.loader_workers, cfg.augment, rt.world)
    splits = {name: SplitTensors(data, SplitLoader(data, plan, persistent=name == "train", max_bad_fraction=cfg.max_bad_fraction),
                                 torch.from_numpy(data.labels)) for name, data in dataset.splits.items()}
    text = None
    cache_status: dict[str, str] = {}
    if needs_text:
        text = build_text_encoder(cfg.text_encoder, cfg.text_max_length).to(rt.device)
        if cfg.freeze_text:
            text.freeze()
        for name, split in splits.items():
            cached, cache_status[name] = cached_text(text, cfg, name, split.data.texts, cfg.freeze_text, rt.device)
            split.input_ids, split.attention_mask = cached["input_ids"], cached["attention_mask"]
            split.text_features = cached.get("features")
    return Prepared(dataset, preprocess, splits, text, plan, cache_status)


def fused_forward(model: GuidanceNetwork, prep: Prepared) -> ForwardFn:
    def forward(batch: dict[str, torch.Tensor], train: bool) -> torch.Tensor:
        images = prep.preprocess(batch["pixels"])
        if "text_features" in batch:
            tokens = batch["text_features"]
        else:
            assert prep.text is not None
            tokens = prep.text(batch["input_ids"], batch["attention_mask"])
        logits, _ = model(images, tokens)
        return logits

    return forward


def image_forward(model: ImageClassifier, prep: Prepared) -> ForwardFn:
    def forward(batch: dict[str, torch.Tensor], train: bool) -> torch.Tensor:
        out: torch.Tensor = model(prep.preprocess(batch["pixels"]))
        return out

    return forward


def build_fused(cfg: TrainConfig, prep: Prepared, num_classes: int, rt: Placement) -> GuidanceNetwork:
    assert prep.text is not None
    encoder = build_image_encoder(cfg.image_encoder, cfg.pretrained, cfg.image_weights)
    encoder.eval()  # probing the feature map with one image must not touch BatchNorm statistics
    with torch.no_grad():
        side = int(encoder.forward_features(torch.zeros(1, 3, cfg.image_size, cfg.image_size)).shape[-1])  # type: ignore[operator]
    encoder.train()
    model = GuidanceNetwork(encoder, prep.text.hidden_size, prep.text.side, side, num_classes,
                            FusionConfig(cfg.fusion, cfg.fusion_dim, cfg.spatial_match), dropout=cfg.dropout)
    if not cfg.freeze_text:
        model.add_module(TEXT_MODULE, prep.text)  # trained jointly: its parameters join the optimiser
    return model.to(rt.device)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job end to end; returns the metrics written to RUN_DIR/metrics.json."""

    started = time.monotonic()
    if not cfg.progress:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    rt = place(cfg.device)
    seed_everything(cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / CHECKPOINT_DIR).mkdir(exist_ok=True)
    if rt.main:
        (cfg.out / "config.json").write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
    needs_text = cfg.mode in ("guidance", "teacher") or (cfg.mode == "distill" and cfg.teacher is None)
    prep = prepare(cfg, rt, needs_text)
    try:
        return _run(cfg, rt, prep, started)
    finally:
        prep.close()  # the loader processes, whatever happened


def _run(cfg: TrainConfig, rt: Placement, prep: Prepared, started: float) -> dict[str, Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    labels = prep.dataset.labels
    violent = prep.dataset.violent_index
    num_classes = len(labels)
    history: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    train_split, val_split = prep.splits["train"], prep.splits["val"]
    adapt_epochs = cfg.adapt_epochs or cfg.epochs
    ckpt = cfg.out / CHECKPOINT_DIR / "last.pt"

    with Progress(*columns, disable=not (cfg.progress and rt.main)) as progress:
        final_model: nn.Module
        final_forward: ForwardFn
        if cfg.mode == "baseline":
            final_model = ImageClassifier(build_image_encoder(cfg.image_encoder, cfg.pretrained, cfg.image_weights), num_classes, cfg.dropout).to(rt.device)
            final_forward = image_forward(final_model, prep)
            result = run_stage("image", final_model, final_forward, ce_loss, train_split, val_split, cfg, cfg.epochs, rt, violent, ckpt, progress)
            history += result.history
        else:
            if cfg.mode == "distill" and cfg.teacher is not None:
                teacher_probs = load_teacher_probs(cfg.teacher, prep, cfg)
            else:
                fused = build_fused(cfg, prep, num_classes, rt)
                fused_fw = fused_forward(fused, prep)
                result = run_stage("fused", fused, fused_fw, ce_loss, train_split, val_split, cfg, cfg.epochs, rt, violent, ckpt, progress)
                history += result.history
                torch.save(fused.state_dict(), cfg.out / CHECKPOINT_DIR / "fused.pt")
                teacher_eval = evaluate(fused, fused_fw, prep, cfg, rt, violent)
                extra["teacher"] = {"threshold": teacher_eval["threshold"], "splits": teacher_eval["splits"]}
                teacher_probs = {name: torch.from_numpy(predict(fused, fused_fw, split, cfg.batch_size * 2, rt.device)[0]) for name, split in prep.splits.items()}
                if rt.main:
                    torch.save(teacher_probs, cfg.out / "teacher_probs.pt")
            if cfg.mode == "teacher":
                final_model, final_forward = fused, fused_fw
            elif cfg.mode == "guidance":
                # Adapt: the guidance-trained encoder, a fresh head, images only.
                final_model = fused.deployable(num_classes, cfg.dropout).to(rt.device)
                final_forward = image_forward(final_model, prep)
                if cfg.adapt_head_epochs > 0:
                    result = run_stage("adapt-head", final_model, final_forward, ce_loss, train_split, val_split, cfg, cfg.adapt_head_epochs,
                                       rt, violent, ckpt, progress, frozen=(final_model.encoder,))
                    history += result.history
                result = run_stage("adapt", final_model, final_forward, ce_loss, train_split, val_split, cfg, adapt_epochs, rt, violent, ckpt,
                                   progress, start_val_auc=result.best_val_auc if cfg.adapt_head_epochs > 0 else -1.0)
                history += result.history
            else:  # distill: a fresh image-only student, trained as long as the baseline, learns from the soft labels
                for name, split in prep.splits.items():
                    split.teacher_probs = teacher_probs[name].float()
                final_model = ImageClassifier(build_image_encoder(cfg.image_encoder, cfg.pretrained, cfg.image_weights), num_classes, cfg.dropout).to(rt.device)
                final_forward = image_forward(final_model, prep)
                result = run_stage("student", final_model, final_forward, distill_loss(cfg.distill_alpha, cfg.distill_temperature),
                                   train_split, val_split, cfg, cfg.epochs, rt, violent, ckpt, progress)
                history += result.history

    metrics = evaluate(final_model, final_forward, prep, cfg, rt, violent)
    summary: dict[str, Any] = {
        "mode": cfg.mode,
        "variant": cfg.variant or variant_name(cfg),
        "deployed_inputs": "image+text" if cfg.mode == "teacher" else "image",
        "labels": labels,
        "violent_index": violent,
        "threshold": metrics["threshold"],
        "operating_point": metrics["operating_point"],
        "splits": metrics["splits"],
        "history": history,
        "train_seconds": round(time.monotonic() - started, 1),
        "head_firing": metrics["head_firing"],
        "data": {"root": str(cfg.data), "sizes": {k: len(v) for k, v in prep.splits.items()}, "val_carved": prep.dataset.val_carved,
                 "bad_rows": [str(b) for b in prep.dataset.bad_rows], "loader": prep.loader.to_json() if prep.loader else None,
                 "augment": cfg.augment, "text_cache": prep.text_cache,
                 "unreadable": {name: sorted(split.loader.failed.values()) for name, split in prep.splits.items() if split.loader.failed}},
        **extra,
    }
    if rt.main:
        save_run(cfg, final_model, summary, metrics, labels, violent)
    if rt.world > 1:
        dist.destroy_process_group()
    return summary


def evaluate(model: nn.Module, forward: ForwardFn, prep: Prepared, cfg: TrainConfig, rt: Placement, violent: int) -> dict[str, Any]:
    """The operating point from val (``cfg.threshold_rule``), then metrics on every split at it; the
    head's firing is recorded during the same pass over val."""
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    firing = None
    for name in ("val", "test"):
        if name in prep.splits:
            with HeadFiring(model) if name == "val" else contextlib.nullcontext() as recorder:
                probs, _ = predict(model, forward, prep.splits[name], cfg.batch_size * 2, rt.device)
            firing = recorder.result() if recorder is not None else firing
            labels = (prep.splits[name].labels.numpy() == violent).astype(np.int64)
            scores[name] = (labels, probs[:, violent])
    point = choose_threshold(*scores["val"], rule=cfg.threshold_rule, target=cfg.threshold_target)
    for warning in point.warnings:
        warnings.warn(f"operating point: {warning}", stacklevel=2)
    threshold = point.threshold
    return {"threshold": threshold, "operating_point": point.to_json(), "head_firing": firing,
            "splits": {n: binary_metrics(lab, sc, threshold) for n, (lab, sc) in scores.items()}, "scores": scores}


class HeadFiring:
    """How alive the classifier head's hidden units are on the frames run while it is entered: ``any``,
    the fraction that fire (ReLU > 0) on at least one frame (a dead head, docs/results.md, shows as a
    small one), and ``per_frame``, the mean fraction firing on a frame. None without a ``head.fc1``."""

    def __init__(self, model: nn.Module) -> None:
        self.fc1 = getattr(getattr(model, "head", None), "fc1", None)
        self.fired: list[torch.Tensor] = []
        self.per_frame: list[torch.Tensor] = []
        self.hook: Any = None

    def _record(self, _m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        self.fired.append((out > 0).any(dim=0).cpu())
        self.per_frame.append((out > 0).float().mean(dim=1).cpu())

    def __enter__(self) -> HeadFiring:
        if self.fc1 is not None:
            self.hook = self.fc1.register_forward_hook(self._record)
        return self

    def __exit__(self, *_: object) -> None:
        if self.hook is not None:
            self.hook.remove()

    def result(self) -> dict[str, float] | None:
        if not self.fired:
            return None
        return {"any": float(torch.stack(self.fired).any(dim=0).float().mean()), "per_frame": float(torch.cat(self.per_frame).mean())}


def load_teacher_probs(teacher_dir: Path, prep: Prepared, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Soft labels written by a teacher or guidance run (teacher_probs.pt)."""
    path = teacher_dir / "teacher_probs.pt"
    if not path.exists():
        raise RunError(f"{path} is missing: --teacher must name a finished teacher or guidance run")
    probs: dict[str, torch.Tensor] = torch.load(path, weights_only=True)
    teacher_config = teacher_dir / "config.json"
    if teacher_config.exists():
        # Same length is not same images: a train-size subset is drawn by the seed.
        theirs = json.loads(teacher_config.read_text())
        for key in ("seed", "train_size"):
            if theirs.get(key) != getattr(cfg, key):
                raise RunError(f"teacher run {teacher_dir} has {key} {theirs.get(key)}, this run {getattr(cfg, key)}: "
                               "its soft labels belong to other images")
    for name, split in prep.splits.items():
        if name not in probs or len(probs[name]) != len(split):
            raise RunError(f"teacher run {teacher_dir} was trained on other data: split {name} does not match")
    return probs
