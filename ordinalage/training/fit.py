"""Training: `fit(config) -> run folder`, built on one `train_one_epoch` / `validate` pair.

A run folder holds the resolved `config.yaml`, `metrics.csv` (one row per epoch), `last.pt` and
`best.pt` (atomic), `split.csv` (the exact split used) and `summary.json`. `fit(None, resume=DIR)`
continues a stopped run from `last.pt`: every epoch reseeds from (seed, epoch), so a resumed run
ends with the same weights as an uninterrupted one (exactly so on a CPU with `num_workers=0`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ordinalage.config import Config, config_from_dict, save_config, to_dict
from ordinalage.errors import UsageError
from ordinalage.training.checkpoint import (
    FORMAT,
    VERSION,
    atomic_torch_save,
    load_checkpoint,
    resolve_input_spec,
    versions,
)
from ordinalage.training.distributed import (
    DistContext,
    ShardSampler,
    all_reduce_sum,
    barrier,
    broadcast,
    gather_concat,
    init_distributed,
    local_batch_size,
    shutdown,
    sync_buffers,
)
from ordinalage.training.runtime import Precision, resolve_precision, seed_everything, select_device

EpochCallback = Callable[[int, dict[str, Any]], None]
METRICS_COLUMNS = ["epoch", "train_loss", "val_loss", "val_mae", "val_accuracy", "val_one_off", "lr",
                   "seconds", "images_per_s", "train_images"]
MONITORS = {"val_mae": "min", "val_loss": "min", "val_accuracy": "max", "val_one_off": "max"}


class TrainingDiverged(UsageError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _console() -> Console:
    return Console(stderr=True)


@dataclass
class TrainState:
    """Everything that lives for the length of a run."""

    config: Config
    run_dir: Path
    device: torch.device
    precision: Precision
    model: torch.nn.Module
    train_model: torch.nn.Module  # the model the loop calls (compiled and/or DDP-wrapped)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    input_spec: Any
    groups: Any
    reference: dict[str, Any]
    ctx: DistContext = DistContext()
    epoch: int = 0  # next epoch to run
    step: int = 0
    best_value: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0


# --------------------------------------------------------------------------------------------- setup


def default_run_dir(config: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.model.head}-{config.model.backbone}-{stamp}"


def build_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    from ordinalage.models.model import param_groups

    t = config.train
    groups = param_groups(model, lr=t.lr, backbone_lr_mult=t.backbone_lr_mult, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True)
    raise UsageError(f"config key 'train.optimizer': unknown value {t.optimizer!r} (adamw, sgd)")


def build_scheduler(config: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step LambdaLR: linear warm-up then cosine to zero, or a step decay, or constant."""
    t = config.train
    total = max(1, t.epochs * steps_per_epoch)
    warmup = int(round(t.warmup_epochs * steps_per_epoch))
    if t.scheduler == "cosine":
        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
    elif t.scheduler == "step":
        def factor(step: int) -> float:
            return t.gamma ** ((step // max(1, steps_per_epoch)) // max(1, t.step_size))
    elif t.scheduler == "none":
        def factor(step: int) -> float:
            return 1.0
    else:
        raise UsageError(f"config key 'train.scheduler': unknown value {t.scheduler!r} (cosine, step, none)")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _check_choices(config: Config) -> None:
    if config.train.monitor not in MONITORS:
        raise UsageError(f"config key 'train.monitor': unknown value {config.train.monitor!r} ({', '.join(MONITORS)})")
    if config.train.epochs < 1:
        raise UsageError("config key 'train.epochs': must be at least 1")
    if config.train.batch_size < 1:
        raise UsageError("config key 'train.batch_size': must be at least 1")


def _write_split(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "age", "group", "split"])
        for split in ("train", "val", "test"):
            records = getattr(data, split)
            idx = data.groups.indices([r.age for r in records]) if records else []
            for r, g in zip(records, idx, strict=True):
                w.writerow([r.path, r.age, int(g), split])
    tmp.replace(path)


def _reference(data: Any) -> dict[str, Any]:
    """Majority training group and median training age: the baseline kept in every run."""
    ages = np.array([r.age for r in data.train], dtype=float)
    idx = data.groups.indices(ages)
    counts = np.bincount(idx[idx >= 0], minlength=len(data.groups))
    majority = int(np.argmax(counts))
    return {"majority_group": majority, "majority_label": data.groups.labels[majority],
            "median_age": float(np.median(ages)), "train_counts": counts.tolist()}


# --------------------------------------------------------------------------------------------- loops


def _batch_to(batch: dict[str, torch.Tensor], device: torch.device, spec: Any, channels_last: bool) -> tuple:
    images = batch["image"].to(device, non_blocking=True)
    x = spec.normalize(images)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    age = batch["age"].to(device, non_blocking=True).float()
    group = batch["group"].to(device, non_blocking=True).long()
    return x, age, group


def train_one_epoch(state: TrainState, loader: Any, progress: Progress | None = None,
                    stop_after_steps: int | None = None) -> dict[str, float]:
    """One pass over the training loader; returns mean loss, seconds and images/s."""
    model, cfg = state.train_model, state.config.train
    model.train()
    start = time.perf_counter()
    task = progress.add_task(f"epoch {state.epoch + 1}/{cfg.epochs}", total=len(loader), loss=float("nan"), ips=0.0) if progress else None
    if state.ctx.enabled:
        from torch.distributed.algorithms.join import Join

        # ranks hold the same number of batches; Join covers a rank left with fewer by unreadable images
        with Join([getattr(model, "_orig_mod", model)]):  # the DDP module, also under torch.compile
            total_loss, total_n = _train_steps(state, loader, progress, task, start, stop_after_steps)
    else:
        total_loss, total_n = _train_steps(state, loader, progress, task, start, stop_after_steps)
    seconds = time.perf_counter() - start
    if progress is not None:
        progress.remove_task(task)
    total_loss, total_n = all_reduce_sum(state.ctx, total_loss, total_n)
    if total_n == 0:
        raise UsageError("no readable training image in this epoch (see the warnings above)")
    return {"train_loss": total_loss / total_n, "seconds": seconds, "images_per_s": total_n / seconds,
            "train_images": int(total_n)}


def _train_steps(state: TrainState, loader: Any, progress: Progress | None, task: Any, start: float,
                 stop_after_steps: int | None) -> tuple[float, int]:
    model, opt, cfg = state.train_model, state.optimizer, state.config.train
    total_loss, total_n = 0.0, 0
    for i, batch in enumerate(loader):
        if batch is None:
            continue
        x, age, group = _batch_to(batch, state.device, state.input_spec, cfg.channels_last and state.device.type == "cuda")
        with state.precision.autocast(state.device):
            logits = model(x)
        loss = state.model.head.loss(logits, age, group)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss.item()} at epoch {state.epoch + 1}, step {i + 1}; stopped. "
                f"The last good checkpoint is {state.run_dir / 'last.pt'} (try a lower train.lr)")
        opt.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            state.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
        state.scaler.step(opt)
        state.scaler.update()
        state.scheduler.step()
        state.step += 1
        n = x.shape[0]
        total_loss += loss.item() * n
        total_n += n
        if progress is not None:
            elapsed = time.perf_counter() - start
            progress.update(task, advance=1, loss=total_loss / total_n, ips=total_n / max(elapsed, 1e-9))
        if stop_after_steps is not None and i + 1 >= stop_after_steps:
            break
    return total_loss, total_n


@torch.inference_mode()
def validate(state: TrainState, loader: Any) -> dict[str, Any]:
    """Loss and metrics over a whole loader (no augmentation)."""
    from ordinalage.evaluation.metrics import compute_metrics

    # with several processes, each rank runs the plain module on its shard: DDP's forward would
    # expect the same number of calls on every rank, and the shards may differ by one batch
    model = state.model if state.ctx.enabled else state.train_model
    model.eval()
    ages, pred_ages, groups, pred_groups, ranks = [], [], [], [], []
    total_loss, total_n = 0.0, 0
    for batch in loader:
        if batch is None:
            continue
        x, age, group = _batch_to(batch, state.device, state.input_spec, state.config.train.channels_last and state.device.type == "cuda")
        with state.precision.autocast(state.device):
            logits = model(x)
        total_loss += state.model.head.loss(logits, age, group).item() * x.shape[0]
        total_n += x.shape[0]
        dec = state.model.decode(logits.float())
        ages.append(age.cpu().numpy())
        groups.append(group.cpu().numpy())
        pred_ages.append(dec.age.float().cpu().numpy())
        pred_groups.append(dec.group.cpu().numpy())
        if dec.rank_proba is not None:
            ranks.append(dec.rank_proba.float().cpu().numpy())
    def cat(parts: list[np.ndarray]) -> np.ndarray | None:
        return np.concatenate(parts) if parts else None

    # every rank validated its own shard: gather, so metrics cover the whole split exactly once
    out = gather_concat(state.ctx, {"age": cat(ages), "pred_age": cat(pred_ages), "group": cat(groups),
                                    "pred_group": cat(pred_groups), "rank": cat(ranks)})
    total_loss, total_n = all_reduce_sum(state.ctx, total_loss, total_n)
    if total_n == 0:
        raise UsageError("no readable validation image (see the warnings above)")
    m = compute_metrics(out["age"], out["pred_age"], out["group"], out["pred_group"], n_groups=len(state.groups),
                        labels=state.groups.labels, rank_proba=out["rank"])
    m["loss"] = total_loss / total_n
    return m


# --------------------------------------------------------------------------------------------- checkpoints


def _checkpoint(state: TrainState) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": VERSION,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "epoch": state.epoch, "step": state.step,
        "best_value": state.best_value, "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs,
        "config": to_dict(state.config),
        "groups": state.groups.labels,
        "reference": state.reference,
        "versions": versions(),
    }


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """On resume, drop rows of epochs that ran after last.pt was written."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if int(r["epoch"]) <= epochs_done]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS)
        w.writeheader()
        w.writerows(keep)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float), encoding="utf-8")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------- fit


def _prepare_run_dir(config: Config) -> tuple[Config, Path]:
    run_dir = Path(config.train.out_dir) if config.train.out_dir else default_run_dir(config)
    if (run_dir / "last.pt").exists():
        raise UsageError(f"{run_dir}: already holds a run; continue it with --resume {run_dir} or choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{run_dir}: cannot write the run folder ({exc.strerror or exc})") from None
    return replace(config, train=replace(config.train, out_dir=str(run_dir))), run_dir


def fit(config: Config | None, *, resume: str | Path | None = None, on_epoch: EpochCallback | None = None,
        quiet: bool = False, stop_after_epochs: int | None = None) -> Path:
    """Train a model and return its run folder.

    `on_epoch(epoch, row)` is called after each epoch with the metrics row (the tuner reports
    to Optuna there and may raise `optuna.TrialPruned`). `stop_after_epochs` ends the run early
    as if interrupted (for tests and for splitting work); `--resume` continues it.
    """
    ckpt = None
    if resume is not None:  # every rank reads last.pt (the run folder must be on a shared file system)
        run_dir = Path(resume)
        if not (run_dir / "last.pt").is_file():
            raise UsageError(f"--resume {run_dir}: no last.pt in this folder")
        ckpt = load_checkpoint(run_dir / "last.pt")
        config = config_from_dict(ckpt["config"])
    ctx, device_name = init_distributed(config.train.device if config is not None else "auto")
    try:
        return _fit(config, ctx, device_name, resume, ckpt, on_epoch, quiet or not ctx.is_main, stop_after_epochs)
    finally:
        shutdown(ctx)


def _fit(config: Config | None, ctx: DistContext, device_name: str, resume: str | Path | None,
         ckpt: dict[str, Any] | None, on_epoch: EpochCallback | None, quiet: bool,
         stop_after_epochs: int | None) -> Path:
    console = _console()
    if resume is not None:
        run_dir = Path(resume)
    else:
        if config is None:
            raise UsageError("fit: a config or --resume is needed")
        _check_choices(config)
        if ctx.enabled and config.train.freeze_epochs > 0:
            raise UsageError("config key 'train.freeze_epochs': not supported with several processes yet")
        outcome: Any = None
        if ctx.is_main:  # rank 0 names and creates the run folder; the others learn it
            try:
                outcome = _prepare_run_dir(config)
            except UsageError as exc:
                outcome = str(exc)
        outcome = broadcast(ctx, outcome)
        if isinstance(outcome, str):
            raise UsageError(outcome)
        config, run_dir = outcome
    assert config is not None
    from ordinalage.data.dataset import build_loader
    from ordinalage.data.prepare import prepare_data
    from ordinalage.models.model import build_model

    t = config.train
    device = select_device(device_name if ctx.enabled else t.device)
    batch = local_batch_size(t.batch_size, ctx)
    precision = resolve_precision(t.precision, device)
    seed_everything(t.seed)

    if ctx.is_main:  # rank 0 first: it fills the caches (synthetic set, hashes) the others then read
        try:
            data = prepare_data(config.data)
        finally:  # on an error too, so the others go on and meet the same error instead of waiting
            barrier(ctx)
    else:
        barrier(ctx)
        with contextlib.redirect_stderr(io.StringIO()):  # rank 0 has printed the same data report
            data = prepare_data(config.data)
    groups = data.groups
    # class weights live in the head (a buffer saved with the model); the label prior sets its biases
    model = build_model(config.model, groups, class_weights=data.class_weights,
                        train_ages=np.array([r.age for r in data.train], dtype=float))
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    spec = resolve_input_spec(config, model.backbone)
    model.to(device)
    if t.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    train_model: torch.nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        train_model = torch.compile(train_model)

    # One sampler for 1 or N processes: a seeded epoch order (or weighted draw) cut to whole global
    # batches (the sampler's drop_last), sharded by rank; so the loader itself drops nothing.
    train_sampler = ShardSampler(len(data.train), ctx, shuffle=True, seed=t.seed, weights=data.sampler_weights,
                                 global_batch=t.batch_size)
    train_loader = build_loader(data.train, groups, config.data, spec.size, batch, train=True, seed=t.seed + ctx.rank,
                                sampler=train_sampler, drop_last=False)
    val_loader = build_loader(data.val, groups, config.data, spec.size, batch, train=False, seed=t.seed,
                              sampler=ShardSampler(len(data.val), ctx, shuffle=False))
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer, len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    state = TrainState(config=config, run_dir=run_dir, device=device, precision=precision, model=model,
                       train_model=train_model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                       input_spec=spec, groups=groups, reference=_reference(data), ctx=ctx)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        state.epoch, state.step = int(ckpt["epoch"]), int(ckpt["step"])
        state.best_value, state.best_epoch = ckpt.get("best_value"), int(ckpt.get("best_epoch", -1))
        state.bad_epochs = int(ckpt.get("bad_epochs", 0))
        if ctx.is_main:
            _truncate_metrics(run_dir / "metrics.csv", state.epoch)
        if not quiet:
            console.print(f"resuming {run_dir} at epoch {state.epoch + 1}/{t.epochs}")
    elif ctx.is_main:
        save_config(config, run_dir / "config.yaml")
        _write_split(run_dir / "split.csv", data)

    if not quiet:
        console.print(f"[bold]{config.model.head}[/] head on [bold]{config.model.backbone}[/] | {device} {precision.name} | "
                      f"train {len(data.train)} / val {len(data.val)} / test {len(data.test)} images at {spec.size} px | "
                      + (f"{ctx.world_size} processes | " if ctx.enabled else "") +
                      f"run folder {run_dir}")
    direction = MONITORS[t.monitor]
    progress = None
    if not quiet:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.0f} img/s"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
        progress.start()
    stopped_early = False
    try:
        while state.epoch < t.epochs:
            if stop_after_epochs is not None and state.epoch >= stop_after_epochs:
                break
            epoch = state.epoch
            seed_everything(t.seed * 100_003 + epoch + 7919 * ctx.rank)
            train_sampler.set_epoch(epoch)
            _reseed_loader(train_loader, t.seed * 100_003 + epoch + 7919 * ctx.rank)
            if not ctx.enabled:
                model.set_backbone_trainable(epoch >= t.freeze_epochs)
            stats = train_one_epoch(state, train_loader, progress)
            sync_buffers(ctx, model)  # validate (and save) rank 0's BatchNorm statistics on every rank
            val = validate(state, val_loader)
            row = {"epoch": epoch + 1, **stats, "val_loss": val["loss"], "val_mae": val["mae"],
                   "val_accuracy": val["accuracy"], "val_one_off": val["one_off"],
                   "lr": optimizer.param_groups[-1]["lr"]}
            state.epoch = epoch + 1
            value = row[t.monitor]
            improved = state.best_value is None or (value < state.best_value if direction == "min" else value > state.best_value)
            if improved:
                state.best_value, state.best_epoch, state.bad_epochs = float(value), epoch + 1, 0
            else:
                state.bad_epochs += 1
            if ctx.is_main:
                ck = _checkpoint(state)
                atomic_torch_save(ck, run_dir / "last.pt")
                if improved:
                    atomic_torch_save(ck, run_dir / "best.pt")
                    _write_json(run_dir / "val_best.json", {"epoch": epoch + 1, **val})
                _append_metrics(run_dir / "metrics.csv", row)
            if not quiet:
                console.print(f"epoch {epoch + 1}/{t.epochs}  loss {stats['train_loss']:.4f}  val_loss {val['loss']:.4f}  "
                              f"val MAE {val['mae']:.2f}  val acc {val['accuracy']:.3f}  {stats['images_per_s']:.0f} img/s  "
                              f"{stats['seconds']:.1f}s" + ("  *" if improved else ""))
            if on_epoch is not None:
                on_epoch(epoch + 1, row)
            if t.early_stop_patience and state.bad_epochs >= t.early_stop_patience:
                stopped_early = True
                if not quiet:
                    console.print(f"early stop: {t.monitor} did not improve for {state.bad_epochs} epochs")
                break
    except KeyboardInterrupt:
        if progress is not None:
            progress.stop()
        if ctx.is_main and not quiet:
            console.print(f"interrupted in epoch {state.epoch + 1}: {run_dir / 'last.pt'} holds the {state.epoch} finished "
                          f"epoch(s); continue with: ordinalage train --resume {run_dir}")
        raise
    finally:
        if progress is not None:
            progress.stop()

    finished = state.epoch >= t.epochs or stopped_early
    summary = {"run_dir": str(run_dir), "head": config.model.head, "backbone": config.model.backbone,
               "target": config.model.target, "data": list(config.data.sources), "epochs_done": state.epoch,
               "epochs": t.epochs, "finished": finished, "stopped_early": stopped_early,
               "monitor": t.monitor, "best_epoch": state.best_epoch, "best_value": state.best_value,
               "reference": state.reference, "data_report": _jsonable(data.report), "dropped": data.dropped,
               "device": str(device), "precision": precision.name}
    if not ctx.is_main:
        return run_dir
    if finished and t.eval_on_end and data.test:
        from ordinalage.evaluation.evaluate import evaluate_run

        summary["test"] = evaluate_run(run_dir, split="test", show=not quiet, device=str(device))
    _write_json(run_dir / "summary.json", summary)
    return run_dir


def _reseed_loader(loader: Any, seed: int) -> None:
    """Make each epoch's worker seeds and main-process augmentation a function of (seed, epoch) alone
    (the epoch order itself comes from ShardSampler.set_epoch)."""
    gen = getattr(loader, "generator", None)
    if gen is not None:
        gen.manual_seed(seed)
    dataset = getattr(loader, "dataset", None)
    transform = getattr(dataset, "transform", None)
    if transform is not None and getattr(loader, "num_workers", 0) == 0:
        from ordinalage.data.augment import reseed_transform

        reseed_transform(transform, seed)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
