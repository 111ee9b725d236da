"""The training engine: one code path for a CPU, one GPU and torchrun DDP (SPEC §5).

Per step t: set lr[t] → ``momentum_update(m[t])`` → forward (autocast) → backward (grad scaler for
fp16) → optimiser step → ``update_center``. Only rank 0 logs and writes; stop requests (signals,
``--max-minutes``) and non-finite steps are agreed on by all ranks with one tiny all-reduce per step.

Non-finite steps, as the release runs them: in fp16 the grad scaler skips a step whose loss or gradients
are not finite and lowers its scale (``GradScaler``'s own behaviour; the model's buffers, BatchNorm
statistics and centre, are restored when the loss itself was not finite); each skipped step is logged in
``metrics.jsonl`` and the run stops only after :data:`MAX_CONSECUTIVE_SKIPPED` in a row. In fp32 and bf16
(no scaler) a non-finite loss or gradient stops the run at once, before the optimiser step. Either way the
last checkpoint written stays the last good one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from core.datasets import ImageReadError
from core.distributed import get_rank, get_world_size, is_distributed
from core.model import SlotCon
from trainer.checkpointing import (
    find_auto_resume,
    init_weights_from,
    load_training_state,
    save_training_state,
)
from trainer.config import TrainConfig, save_config_yaml
from trainer.data import DataError, build_loader
from trainer.lars import LARS
from trainer.metrics import MetricsWriter
from trainer.precision import resolve_precision
from trainer.schedules import run_schedules

logger = logging.getLogger("trainer")

EXIT_OK, EXIT_DATA, EXIT_NONFINITE = 0, 2, 3
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Budgeted runs: untimed steps first (loader and allocator warm-up), then steps timed until both bounds hold.
#: 30 s of steps, not 10: on a shared 2-core VM a 12 s window measured 0.571 s/step where the run then went
#: at 0.35 (cpu-demo, AMD EPYC AVX2), fixing 907 steps instead of the preset's 1000; the median of a longer
#: window is not moved by a burst of someone else's load. The steps timed are ordinary training steps.
BUDGET_WARMUP_STEPS, BUDGET_MIN_TIMED_STEPS, BUDGET_MIN_TIMED_S, BUDGET_MAX_TIMED_STEPS = 2, 5, 30.0, 200
#: Seconds kept back for the final checkpoints, and the share of the rest that the plan uses.
BUDGET_RESERVE_S, BUDGET_SAFETY = 5.0, 0.97
#: fp16: the run stops after this many consecutive steps skipped by the grad scaler.
MAX_CONSECUTIVE_SKIPPED = 20


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, unreadable image); ``exit_code`` for the CLI."""

    def __init__(self, message: str, exit_code: int = EXIT_DATA) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def init_distributed(device: str) -> tuple[torch.device, int]:
    """Join the torchrun process group when launched by torchrun; returns (device, local rank)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not is_distributed():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
    return dev, local_rank


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Returns LARS or SGD over the student's trainable parameters (lr is set per step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "lars":
        return LARS(params, lr=cfg.scaled_lr(), weight_decay=cfg.weight_decay, momentum=cfg.momentum, eta=cfg.lars_eta)
    return torch.optim.SGD(
        params, lr=cfg.scaled_lr(), momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
    )


def budget_total(step: int, remaining_s: float, step_seconds: float, full_steps: int) -> int:
    """The total a budget fixes at ``step``: the steps that fit in ``BUDGET_SAFETY`` of the seconds left at
    ``step_seconds`` each, never more than the epochs allow (``full_steps``)."""
    return min(full_steps, step + max(int(BUDGET_SAFETY * remaining_s / step_seconds), 0))


class Trainer:
    """Builds model, optimiser, data and schedules from a :class:`TrainConfig`; :meth:`run` trains."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.clock_start = self.clock()  # the budget counts from here
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.device, self.local_rank = init_distributed(cfg.device)
        self.rank, self.world = get_rank(), get_world_size()
        precision, reason = resolve_precision(cfg.precision, self.device)
        if cfg.precision == "auto" or not cfg.precision_reason:
            cfg = dataclasses.replace(cfg, precision=precision, precision_reason=reason)
        self.cfg = cfg
        logger.info("precision %s", cfg.precision_reason)
        self.out = Path(cfg.output_dir)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config_yaml(cfg, self.out / "config.yaml")
        torch.manual_seed(cfg.seed)
        self.loader, self.sampler = build_loader(cfg, self.world, self.rank)
        self.steps_per_epoch = self.sampler.batches_per_epoch()

        self.model = SlotCon(cfg.model_config())
        if cfg.init_from:
            init_weights_from(cfg.init_from, self.model)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        self.step, self.epoch = 0, 0
        resume = cfg.resume or (find_auto_resume(self.out) if cfg.auto_resume else None)
        if cfg.auto_resume and not resume:
            logger.info("no checkpoint in %s; starting from scratch", self.out)
        if resume:
            state = load_training_state(resume, self.model, self.optimizer, self.scaler)
            self.step = state["step"] if state["step"] is not None else state["epoch"] * self.steps_per_epoch
            self._adopt_budget(state["train_config"])
        self.epoch = self.step // self.steps_per_epoch
        self._set_schedules()
        if self.world > 1 and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if cfg.compile:
            for m in (self.model.encoder_q, self.model.encoder_k, self.model.projector_q, self.model.projector_k):
                m.compile()
        self.net: nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.stop_signal: int | None = None
        self.skipped_steps = self.consecutive_skipped = 0
        self.metrics = MetricsWriter(
            self.out / "metrics.jsonl" if self.rank == 0 else None,
            self.stop_step,
            cfg.epochs,
            cfg.progress,
            start_step=self.step,
        )

    # -- schedules and the time budget ----------------------------------------------------------
    def clock(self) -> float:
        """Seconds on the clock that the time budget is planned and measured with (a monotonic clock)."""
        return time.perf_counter()

    @property
    def budget_pending(self) -> bool:
        """True while a ``--budget-minutes`` run has not fixed its total number of steps yet."""
        return self.cfg.budget_minutes > 0 and self.cfg.schedule_fixed_at == 0

    def _adopt_budget(self, saved: dict | None) -> None:
        """A budgeted run resumed from a checkpoint keeps the total that its first process fixed."""
        if not self.budget_pending or not saved or int(saved.get("schedule_fixed_at") or 0) <= 0:
            return
        self.cfg = dataclasses.replace(
            self.cfg, total_steps=int(saved["total_steps"]), schedule_fixed_at=int(saved["schedule_fixed_at"])
        )
        logger.info(
            "budget: resuming the schedules of %d steps fixed at step %d",
            self.cfg.total_steps,
            self.cfg.schedule_fixed_at,
        )
        if self.rank == 0:
            save_config_yaml(self.cfg, self.out / "config.yaml")

    def _set_schedules(self) -> None:
        """(Re)computes the lr and momentum arrays, the total and the stop step from the config."""
        cfg = self.cfg
        full = cfg.epochs * self.steps_per_epoch
        total = full if self.budget_pending or cfg.total_steps <= 0 else min(cfg.total_steps, full)
        self.total_steps = total
        self.stop_step = min(total, cfg.max_steps) if cfg.max_steps > 0 else total
        warmup = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        self.lrs, self.moms = run_schedules(
            cfg.scaled_lr(),
            warmup,
            cfg.final_lr,
            cfg.warmup_multiplier,
            cfg.teacher_momentum,
            total,
            provisional_steps=full,
            fixed_at=cfg.schedule_fixed_at,
        )

    def _fix_budget(self, step_seconds: float) -> None:
        """Fixes ``total_steps`` so that the run ends within ``budget_minutes`` at ``step_seconds`` per step."""
        cfg = self.cfg
        if is_distributed():  # every rank takes the slowest rank's time, so all agree on the total
            t = torch.tensor([step_seconds], dtype=torch.float64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            step_seconds = float(t.item())
        elapsed = self.clock() - self.clock_start
        remaining = 60 * cfg.budget_minutes - elapsed - BUDGET_RESERVE_S
        full = cfg.epochs * self.steps_per_epoch
        total = budget_total(self.step, remaining, step_seconds, full)
        self.cfg = dataclasses.replace(cfg, total_steps=total, schedule_fixed_at=self.step)
        self._set_schedules()
        self.metrics.set_total(self.stop_step)
        why = "the preset's epochs" if total == full else "the budget"
        logger.info(
            "budget %.1f min: %.3f s/step measured → %d steps in total (%.1f epochs; capped by %s), "
            "training should end in %.1f min; schedules fixed for that total",
            cfg.budget_minutes,
            step_seconds,
            total,
            total / self.steps_per_epoch,
            why,
            (elapsed + (total - self.step) * step_seconds) / 60,
        )
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        cpus = os.cpu_count() or 1
        self.metrics.note(
            "budget",
            step=self.step,
            step_seconds=step_seconds,
            remaining_s=remaining,
            total_steps=total,
            full_steps=full,
            budget_minutes=cfg.budget_minutes,
            load_average=load,
            cpus=cpus,
        )
        if load is not None and load > cpus + 0.5 and total < full:
            logger.warning(
                "the machine is busy (load average %.1f on %d CPUs) while the budget timed its steps: "
                "this run trains %d of %d steps; on a quiet machine it would train more",
                load,
                cpus,
                total,
                full,
            )
        if self.rank == 0:
            save_config_yaml(self.cfg, self.out / "config.yaml")
        if total < int(round(cfg.warmup_epochs * self.steps_per_epoch)):
            logger.warning("the budget leaves fewer steps than the lr warm-up: the cosine part is skipped")

    # -- checkpoints --------------------------------------------------------------------------------
    def save(self, name: str) -> Path | None:
        """Rank 0 writes ``output_dir/name`` atomically; returns the path (None on other ranks)."""
        if self.rank != 0:
            return None
        path = save_training_state(
            self.out / name,
            self.model,
            self.optimizer,
            self.scaler,
            epoch=self.step // self.steps_per_epoch,
            step=self.step,
            train_config=self.cfg.to_dict(),
        )
        logger.info("saved %s (step %d)", path, self.step)
        return path

    # -- signals ------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame) -> None:  # noqa: ANN001
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop_signal = signum

    def _agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag becomes true on every rank when it is true on any (one tiny all-reduce)."""
        if not is_distributed():
            return flags
        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(t)
        return tuple(bool(v > 0) for v in t.tolist())

    # -- the loop -----------------------------------------------------------------------------------
    def _to_device(self, batch):  # noqa: ANN001, ANN202
        crops, coords, flags = batch
        mf = torch.channels_last if self.cfg.channels_last else torch.contiguous_format
        crops = [c.to(self.device, non_blocking=True, memory_format=mf) for c in crops]
        return (
            crops,
            [c.to(self.device, non_blocking=True) for c in coords],
            [f.to(self.device, non_blocking=True) for f in flags],
        )

    def _grads_finite(self) -> bool:
        """True when every gradient of the student is finite (one fused reduction)."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        return bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()) if grads else True

    def train_step(self, batch) -> dict[str, torch.Tensor]:  # noqa: ANN001
        """One optimisation step at ``self.step``; returns the model's output dict (detached terms) plus
        ``skipped`` (fp16: the grad scaler skipped the step) and ``nonfinite`` (the loss or a gradient was not
        finite; in fp32/bf16 the optimiser step was then not taken), both 0-d bool tensors."""
        for group in self.optimizer.param_groups:
            group["lr"] = float(self.lrs[self.step])
        self.model.momentum_update(float(self.moms[self.step]))
        crops, coords, flags = self._to_device(batch)
        amp = self.cfg.precision != "fp32"
        buffers = [b.detach().clone() for b in self.model.buffers()] if self.scaler is not None else None
        with torch.autocast(self.device.type, dtype=_DTYPES[self.cfg.precision], enabled=amp):
            out = self.net(crops, coords, flags)
        self.optimizer.zero_grad(set_to_none=True)
        loss_finite = bool(torch.isfinite(out["loss"].detach()))
        skipped = False
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.scale(out["loss"]).backward()
            self.scaler.unscale_(self.optimizer)  # as the release: the optimiser sees true gradients
            self.scaler.step(self.optimizer)  # skipped when a gradient is not finite
            self.scaler.update()  # ... and then the scale is lowered
            skipped = self.scaler.get_scale() < scale
            nonfinite = skipped or not loss_finite
            if not loss_finite:  # the forward itself overflowed: undo its BatchNorm statistics
                torch._foreach_copy_(list(self.model.buffers()), buffers)
        else:
            out["loss"].backward()
            nonfinite = not loss_finite or not self._grads_finite()
            if not nonfinite:
                self.optimizer.step()
        if loss_finite and bool(torch.isfinite(out["center_batch"]).all()):
            self.model.update_center(out["center_batch"])
        out["skipped"] = torch.tensor(skipped)
        out["nonfinite"] = torch.tensor(nonfinite)
        return out

    def _log(self, out: dict[str, torch.Tensor], window: dict[str, float]) -> None:
        terms = torch.stack(
            [
                out[k].detach().float()
                for k in ("loss", "loss_group", "loss_slot", "active_slots", "batch_dead", "positive_pairs")
            ]
        )
        if is_distributed():
            dist.all_reduce(terms)
            terms /= self.world
        loss, lg, ls, active, dead, pairs = terms.tolist()
        wall = max(time.perf_counter() - window["start"], 1e-9)
        self.metrics.log_step(
            {
                "step": self.step,
                "epoch": self.step // self.steps_per_epoch,
                "lr": float(self.lrs[self.step - 1]),
                "momentum": float(self.moms[self.step - 1]),
                "loss": loss,
                "loss_group": lg,
                "loss_slot": ls,
                "images_per_sec": window["steps"] * self.cfg.batch_size / wall,
                "data_wait": window["wait"] / wall,
                "active_slots": active,
                "batch_dead": dead,
                "positive_pairs": pairs,
                "skipped_steps": self.skipped_steps,
            }
        )

    def _non_finite_step(self, out: dict[str, torch.Tensor]) -> None:
        """A step whose loss or gradients were not finite: fp16 counts it skipped (logged; raises after
        :data:`MAX_CONSECUTIVE_SKIPPED` in a row), fp32/bf16 raise :class:`TrainingError` at once."""
        what = "loss" if not bool(torch.isfinite(out["loss"].detach())) else "gradients"
        where = f"step {self.step} (epoch {self.epoch})"
        if self.scaler is None:
            raise TrainingError(
                f"non-finite {what} at {where} in {self.cfg.precision}; stopping, the last good checkpoint is kept",
                EXIT_NONFINITE,
            )
        self.skipped_steps += 1
        self.consecutive_skipped += 1
        scale = float(self.scaler.get_scale())
        self.metrics.note(
            "skipped_step",
            step=self.step,
            reason=f"non-finite {what}",
            scale=scale,
            consecutive=self.consecutive_skipped,
            skipped_steps=self.skipped_steps,
        )
        logger.warning("fp16: %s skipped (non-finite %s), grad scale lowered to %g", where, what, scale)
        if self.consecutive_skipped >= MAX_CONSECUTIVE_SKIPPED:
            raise TrainingError(
                f"{self.consecutive_skipped} consecutive fp16 steps skipped (non-finite loss or "
                f"gradients), the last at {where}; stopping, the last good checkpoint is kept",
                EXIT_NONFINITE,
            )

    def _timed_enough(self, probe: dict, now: float) -> bool:
        """Times the steps after the untimed warm-up ones; True once enough were timed to fix the budget.

        Each timed step's duration is kept (``probe["durations"]``): the budget uses their median, so a
        burst of load from another process, or one slow step, does not shrink the whole run."""
        if "durations" not in probe:
            probe["warm"] = probe.get("warm", 0) + 1
            if probe["warm"] >= BUDGET_WARMUP_STEPS:
                probe.update(last=now, durations=[])
            return False
        probe["durations"].append(now - probe["last"])
        probe["last"] = now
        timed, seconds = len(probe["durations"]), sum(probe["durations"])
        return (timed >= BUDGET_MIN_TIMED_STEPS and seconds >= BUDGET_MIN_TIMED_S) or timed >= BUDGET_MAX_TIMED_STEPS

    def run(self) -> int:
        """Train until the last step, a stop request or a failure; returns the process exit code."""
        cfg = self.cfg
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        start = last_save = last_log = time.perf_counter()
        plan = (
            f"time budget {cfg.budget_minutes:g} min: timing the first steps, then fixing the total"
            if self.budget_pending
            else f"{self.total_steps} steps"
        )
        logger.info(
            "training %s (%d epochs × %d steps at most), step %d → %d, batch %d on %d × %s, %s",
            plan,
            cfg.epochs,
            self.steps_per_epoch,
            self.step,
            self.stop_step,
            cfg.batch_size,
            self.world,
            self.device,
            cfg.precision,
        )
        probe: dict[str, float] = {}
        self.net.train()
        try:
            while self.step < self.stop_step:
                self.epoch = self.step // self.steps_per_epoch
                self.sampler.set_epoch(self.epoch, self.step - self.epoch * self.steps_per_epoch)
                window = {"start": time.perf_counter(), "steps": 0, "wait": 0.0}
                it = iter(self.loader)
                while self.step < self.stop_step and self.step // self.steps_per_epoch == self.epoch:
                    t0 = time.perf_counter()
                    try:
                        batch = next(it)
                    except StopIteration:
                        break
                    except ImageReadError as e:
                        reason = str(e).strip().splitlines()[-1]
                        raise TrainingError(
                            f"unreadable image ({reason}); fix or remove it, or pass --skip-unreadable"
                        ) from None
                    window["wait"] += time.perf_counter() - t0
                    out = self.train_step(batch)
                    self.step += 1
                    window["steps"] += 1
                    now = time.perf_counter()
                    timed = self.budget_pending and self._timed_enough(probe, self.clock())
                    over_time = cfg.max_minutes > 0 and now - start > 60 * cfg.max_minutes
                    stop, nonfinite, timed = self._agree(
                        self.stop_signal is not None or over_time, bool(out["nonfinite"]), timed
                    )
                    if timed:
                        self._fix_budget(statistics.median(probe["durations"]))
                    if nonfinite:
                        self._non_finite_step(out)
                    else:
                        self.consecutive_skipped = 0
                    due = self.step % cfg.log_every == 0 or now - last_log >= cfg.log_seconds
                    if due or self.step >= self.stop_step or stop:
                        self._log(out, window)
                        window = {"start": time.perf_counter(), "steps": 0, "wait": 0.0}
                        last_log = now
                    if stop:
                        path = self.save("current.pth")
                        why = f"signal {signal.Signals(self.stop_signal).name}" if self.stop_signal else "max-minutes"
                        self.metrics.event(
                            "stopped", step=self.step, reason=why, checkpoint=str(path) if path else None
                        )
                        logger.info("stopped at step %d (%s)", self.step, why)
                        return EXIT_OK
                    if time.perf_counter() - last_save > 60 * cfg.save_minutes:
                        self.save("current.pth")
                        last_save = time.perf_counter()
                if self.step % self.steps_per_epoch == 0 and self.step > 0:
                    done = self.step // self.steps_per_epoch
                    if done % cfg.save_every == 0 or done == cfg.epochs:
                        self.save(f"ckpt_epoch_{done}.pth")
                        self.save("current.pth")
                        last_save = time.perf_counter()
            self.save("current.pth")
            final = self.save("final.pth")
            seconds = time.perf_counter() - self.clock_start
            self.metrics.event(
                "finished",
                step=self.step,
                checkpoint=str(final) if final else None,
                seconds=round(time.perf_counter() - start, 1),
            )
            if cfg.budget_minutes > 0:
                logger.info(
                    "budget %.1f min: finished %d steps in %.1f min", cfg.budget_minutes, self.step, seconds / 60
                )
            return EXIT_OK
        except TrainingError as e:
            logger.error("%s", e)
            self.metrics.event("failed", step=self.step, message=str(e))
            return e.exit_code
        finally:
            for s, h in old.items():
                signal.signal(s, h)


__all__ = ["DataError", "EXIT_DATA", "EXIT_NONFINITE", "EXIT_OK", "Trainer", "TrainingError"]
