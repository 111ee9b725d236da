"""The training engine: one code path for a CPU, one GPU and torchrun DDP (docs/method.md §5).

Per step t: set lr[t] → ``momentum_update(m[t])`` → forward (autocast) → backward (grad scaler for fp16)
→ load the next batch → **agree** → optimiser step → ``update_center``. Only rank 0 logs and writes.

**The distributed rule.** Every rank issues the same collectives in the same order. So every branch that
leads to a collective, or decides how many follow (a log line's reduction, a checkpoint, the time budget's
total, a stop, the skip of a non-finite step, the report of an unreadable image), reads only the step count
or the :class:`trainer.consensus.Agreed` values of the step's one agreement (an all-reduce of what each rank
saw: its signals, its clock, its loss, its next batch). Nothing a single rank sees on its own (its clock, its
data, its files, its errors) decides a collective. The next batch is loaded before the agreement so that a
rank that cannot load it is known to all before anyone starts the next forward. Collectives are recorded
(:mod:`trainer.collectives`) so that tests compare the ranks' sequences, and a collective that fails or times
out names the step and the phase it was issued in.

Non-finite steps: a step whose loss or gradients are not finite on any rank is skipped on every rank (in fp16
the grad scaler then lowers its scale, as in the release); when the forward itself was not finite, the model's
buffers (BatchNorm statistics) are restored and the centre is not updated. Each skipped step is logged in
``metrics.jsonl``; the run stops after :data:`MAX_CONSECUTIVE_SKIPPED` in a row. The last checkpoint written
stays the last good one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from core.checkpoint import CheckpointError
from core.datasets import ImageReadError
from core.distributed import get_rank, get_world_size, is_distributed
from core.model import SlotCon
from core.syncbn import convert_sync_batchnorm
from trainer import loop as trainer_loop
from trainer.checkpointing import (
    find_auto_resume,
    init_weights_from,
    load_training_state,
    save_training_state,
)
from trainer.collectives import CollectiveRecorder
from trainer.config import TrainConfig, save_config_yaml
from trainer.consensus import Agreed, LocalView, agree
from trainer.data import DataError, build_loader
from trainer.distributed import first_line, init_distributed, is_collective_failure
from trainer.lars import LARS
from trainer.loop import BatchStream, LogWindow, LoopState, StepResult, budget_total
from trainer.metrics import MetricsWriter
from trainer.precision import resolve_precision
from trainer.schedules import run_schedules

logger = logging.getLogger("trainer")

EXIT_OK, EXIT_DATA, EXIT_NONFINITE, EXIT_DISTRIBUTED = 0, 2, 3, 4
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: The run stops after this many consecutive skipped (non-finite) steps.
MAX_CONSECUTIVE_SKIPPED = 20


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, unreadable image); ``exit_code`` for the CLI."""

    def __init__(self, message: str, exit_code: int = EXIT_DATA) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Returns LARS or SGD over the student's trainable parameters (lr is set per step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "lars":
        return LARS(params, lr=cfg.scaled_lr(), weight_decay=cfg.weight_decay, momentum=cfg.momentum, eta=cfg.lars_eta)
    return torch.optim.SGD(
        params, lr=cfg.scaled_lr(), momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
    )


class Trainer:
    """Builds model, optimiser, data and schedules from a :class:`TrainConfig`; :meth:`run` trains."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.clock_start = self.clock()  # the budget counts from here
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.device, self.local_rank = init_distributed(cfg.device, cfg.dist_timeout_minutes)
        self.rank, self.world = get_rank(), get_world_size()
        self.recorder = CollectiveRecorder(keep=bool(cfg.record_collectives))
        if is_distributed():
            self.recorder.attach()
        self.recorder.set(0, "setup")
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
        problem: Exception | None = None
        try:
            self._prepare()
        except (DataError, CheckpointError) as e:
            problem = e
        self._agree_on_setup(problem)
        self.epoch = self.step // self.steps_per_epoch
        self._set_schedules()
        if self.world > 1 and cfg.sync_batchnorm:
            if self.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            else:  # the same statistics and collectives on CPU ranks (core.syncbn)
                self.model = convert_sync_batchnorm(self.model)
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

    def _prepare(self) -> None:
        """This rank's data, model, optimiser and grad scaler, and the state it resumes from (if any). Raises
        DataError or CheckpointError; :meth:`_agree_on_setup` makes every rank see them."""
        cfg = self.cfg
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
            saved_world = state.get("world_size")
            if saved_world and saved_world != self.world:
                logger.warning(
                    "resuming a run of %d processes on %d: the total batch stays %d (%d a process), the schedules "
                    "are recomputed for %d steps an epoch, and the images' order differs from an uninterrupted run",
                    saved_world,
                    self.world,
                    cfg.batch_size,
                    cfg.batch_size // self.world,
                    self.steps_per_epoch,
                )

    def _agree_on_setup(self, problem: Exception | None) -> None:
        """Every rank learns how the others start: a rank that failed to set up (its data, its checkpoint) stops
        them all with its message, and ranks that would start differently (another number of images, another
        step, another budget) are refused before the first collective of training. One all-gather."""
        facts = None
        if problem is None:
            facts = {
                "images": len(self.loader.dataset),
                "steps_per_epoch": self.steps_per_epoch,
                "step": self.step,
                "total_steps": self.cfg.total_steps,
                "schedule_fixed_at": self.cfg.schedule_fixed_at,
            }
        if not is_distributed():
            if problem is not None:
                raise problem
            return
        mine = (f"rank {self.rank}: {problem}" if problem is not None else None, facts)
        views: list = [None] * self.world
        dist.all_gather_object(views, mine)
        errors = [message for message, _ in views if message]
        if errors:
            raise DataError("; ".join(errors))
        for rank, (_, theirs) in enumerate(views):
            if theirs != views[0][1]:
                raise DataError(
                    f"the ranks would not start alike: rank 0 {views[0][1]}, rank {rank} {theirs}; every process "
                    "must see the same training images and the same output folder (one shared by every node)"
                )

    # -- schedules and the time budget ----------------------------------------------------------
    def clock(self) -> float:
        """Seconds on this rank's clock (monotonic), which every timed decision reads: the log and save
        intervals, ``--max-minutes`` and the time budget. Decisions use it only through the agreement."""
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

    def _fix_budget(self, step_seconds: float, elapsed: float) -> None:
        """Fixes ``total_steps`` so that the run ends within ``budget_minutes``, from the agreed step time and
        elapsed time (the slowest rank's: every rank computes the same total)."""
        cfg = self.cfg
        remaining = 60 * cfg.budget_minutes - elapsed - trainer_loop.BUDGET_RESERVE_S
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
            world_size=self.world,
        )
        logger.info("saved %s (step %d)", path, self.step)
        return path

    # -- signals ------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame) -> None:  # noqa: ANN001
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop_signal = signum

    # -- one step -----------------------------------------------------------------------------------
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

    def forward_backward(self, batch) -> StepResult:  # noqa: ANN001
        """Forward and backward of ``self.step`` (lr and teacher momentum set from the schedules); no optimiser
        step yet. Returns the outputs and whether this rank saw a non-finite loss or gradient."""
        for group in self.optimizer.param_groups:
            group["lr"] = float(self.lrs[self.step])
        self.model.momentum_update(float(self.moms[self.step]))
        crops, coords, flags = self._to_device(batch)
        buffers = [b.detach().clone() for b in self.model.buffers()]
        self.recorder.set(self.step, "forward")
        with torch.autocast(self.device.type, dtype=_DTYPES[self.cfg.precision], enabled=self.cfg.precision != "fp32"):
            out = self.net(crops, coords, flags)
        self.optimizer.zero_grad(set_to_none=True)
        forward_nonfinite = not (
            bool(torch.isfinite(out["loss"].detach())) and bool(torch.isfinite(out["center_batch"]).all())
        )
        self.recorder.set(self.step, "backward")
        loss = self.scaler.scale(out["loss"]) if self.scaler is not None else out["loss"]
        loss.backward()
        nonfinite = forward_nonfinite or not self._grads_finite()
        return StepResult(out, forward_nonfinite, nonfinite, buffers)

    def apply_step(self, result: StepResult, agreed: Agreed) -> None:
        """The optimiser step and the centre's update, or, where any rank saw a non-finite loss or gradient,
        the same skip on every rank: no optimiser step, the grad scaler's scale lowered, and the buffers of a
        non-finite forward restored."""
        if self.scaler is not None:
            if agreed.nonfinite and not result.nonfinite:
                # make this rank's scaler see what another rank saw, so every rank skips and lowers the scale
                next(p.grad for p in self.model.parameters() if p.grad is not None).view(-1)[0] = float("inf")
            self.scaler.unscale_(self.optimizer)  # as the release: the optimiser sees true gradients
            self.scaler.step(self.optimizer)  # skipped when a gradient is not finite
            self.scaler.update()  # ... and then the scale is lowered
        elif not agreed.nonfinite:
            self.optimizer.step()
        if agreed.forward_nonfinite:
            torch._foreach_copy_(list(self.model.buffers()), result.buffers)
        elif not agreed.nonfinite:
            self.model.update_center(result.out["center_batch"])

    def observe(self, result: StepResult | None, failed: bool = False, loop: LoopState | None = None) -> LocalView:
        """What this rank saw of the step that just ended (``self.step`` counts it) and of its next batch."""
        now = self.clock()
        cfg = self.cfg
        view = LocalView(
            signal=self.stop_signal or 0,
            forward_nonfinite=bool(result and result.forward_nonfinite),
            nonfinite=bool(result and result.nonfinite),
            failed_rank=self.rank if failed else -1,
            elapsed_s=now - self.clock_start,
        )
        if loop is None:
            return view
        ready = self.budget_pending and loop.probe.observe(now)
        return dataclasses.replace(
            view,
            over_time=cfg.max_minutes > 0 and now - loop.start > 60 * cfg.max_minutes,
            log_due=now - loop.last_log >= cfg.log_seconds,
            save_due=now - loop.last_save > 60 * cfg.save_minutes,
            budget_ready=ready,
            step_seconds=loop.probe.median(),  # every rank's, so the total is fixed at the slowest rank's
        )

    def agree(self, view: LocalView) -> Agreed:
        """The step's one agreement (:func:`trainer.consensus.agree`), recorded as such."""
        self.recorder.set(self.step, "agree")
        return agree(view, self.device)

    def train_step(self, batch) -> dict[str, torch.Tensor]:  # noqa: ANN001
        """One optimisation step at ``self.step`` outside :meth:`run` (benchmarks, tests): forward, backward,
        the agreement on finiteness, the step. Returns the model's outputs plus ``skipped`` and ``nonfinite``
        (0-d bool tensors: the step was skipped on every rank / this rank saw a non-finite value)."""
        result = self.forward_backward(batch)
        agreed = self.agree(self.observe(result))
        self.apply_step(result, agreed)
        out = result.out
        out["skipped"] = torch.tensor(agreed.nonfinite)
        out["nonfinite"] = torch.tensor(result.nonfinite)
        return out

    # -- reports ------------------------------------------------------------------------------------
    def _log(self, out: dict[str, torch.Tensor], window: LogWindow) -> None:
        self.recorder.set(self.step, "log")
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
        wall = max(time.perf_counter() - window.start, 1e-9)
        self.metrics.log_step(
            {
                "step": self.step,
                "epoch": self.step // self.steps_per_epoch,
                "lr": float(self.lrs[self.step - 1]),
                "momentum": float(self.moms[self.step - 1]),
                "loss": loss,
                "loss_group": lg,
                "loss_slot": ls,
                "images_per_sec": window.steps * self.cfg.batch_size / wall,
                "data_wait": window.wait / wall,
                "active_slots": active,
                "batch_dead": dead,
                "positive_pairs": pairs,
                "skipped_steps": self.skipped_steps,
            }
        )

    def _skipped_step(self, agreed: Agreed) -> None:
        """Counts a step skipped on every rank (logged); raises after :data:`MAX_CONSECUTIVE_SKIPPED` in a row."""
        what = "loss" if agreed.forward_nonfinite else "gradients"
        where = f"step {self.step} (epoch {self.epoch})"
        self.skipped_steps += 1
        self.consecutive_skipped += 1
        scale = float(self.scaler.get_scale()) if self.scaler is not None else None
        self.metrics.note(
            "skipped_step",
            step=self.step,
            reason=f"non-finite {what}",
            scale=scale,
            consecutive=self.consecutive_skipped,
            skipped_steps=self.skipped_steps,
        )
        lowered = f", grad scale lowered to {scale:g}" if scale is not None else ""
        logger.warning("%s: %s skipped on every rank (non-finite %s)%s", self.cfg.precision, where, what, lowered)
        if self.consecutive_skipped >= MAX_CONSECUTIVE_SKIPPED:
            raise TrainingError(
                f"{self.consecutive_skipped} consecutive {self.cfg.precision} steps skipped (non-finite loss or "
                f"gradients), the last at {where}; stopping, the last good checkpoint is kept",
                EXIT_NONFINITE,
            )

    def _data_failure(self, message: str | None) -> TrainingError:
        """The error every rank raises when a rank could not load its next batch: each rank's message is
        gathered (a collective taken on the agreed failure), so every rank reports which rank and which file."""
        self.recorder.set(self.step, "data failure")
        messages = [message] * self.world
        if is_distributed():
            dist.all_gather_object(messages, message)
        found = "; ".join(m for m in messages if m)
        return TrainingError(f"{found} (before step {self.step + 1})")

    def _fetch(self, stream: BatchStream, step: int):  # noqa: ANN202
        """(batch, None) for ``step``, or (None, message) naming this rank and the reason it has no batch."""
        try:
            return stream.batch(step), None
        except ImageReadError as e:
            path = Path(e.path)
            with contextlib.suppress(ValueError):  # named from the data root when it lies inside
                path = path.relative_to(Path(self.cfg.data).resolve()) if path.is_absolute() else path
            reason = f": {e.reason.strip().splitlines()[-1]}" if e.reason else ""
            return None, (
                f"rank {self.rank}: unreadable image {path}{reason}; fix or remove it, or pass --skip-unreadable"
            )
        except StopIteration:
            return None, f"rank {self.rank}: the data loader ended before step {step + 1}"

    # -- the loop -----------------------------------------------------------------------------------
    def train_one_epoch(self, stream: BatchStream, batch, loop: LoopState):  # noqa: ANN001, ANN201
        """Trains the steps left in the current epoch (or until the stop step); returns the next step's batch,
        or None after the last step and when the run stopped (``loop.stopped``). Raises TrainingError."""
        epoch = self.epoch = self.step // self.steps_per_epoch
        while self.step < self.stop_step and self.step // self.steps_per_epoch == epoch:
            result = self.forward_backward(batch)
            batch, problem = None, None
            if self.step + 1 < self.stop_step:
                t0 = time.perf_counter()
                batch, problem = self._fetch(stream, self.step + 1)
                loop.window.wait += time.perf_counter() - t0
            self.step += 1
            loop.window.steps += 1
            agreed = self.agree(self.observe(result, problem is not None, loop))
            self.apply_step(result, agreed)
            if agreed.budget_ready:
                self._fix_budget(agreed.step_seconds, agreed.elapsed_s)
            if agreed.nonfinite:
                self._skipped_step(agreed)
            else:
                self.consecutive_skipped = 0
            end = self.step >= self.stop_step
            if self.step % self.cfg.log_every == 0 or agreed.log_due or end or agreed.stop:
                self._log(result.out, loop.window)
                loop.window, loop.last_log = LogWindow(), self.clock()
            if agreed.stop:
                self._stopped(agreed)
                loop.stopped = True
                return None
            if agreed.failed_rank >= 0:
                raise self._data_failure(problem)
            if agreed.save_due:
                self.save("current.pth")
                loop.last_save = self.clock()
        done = self.step // self.steps_per_epoch
        periodic = self.cfg.save_every > 0 and done % self.cfg.save_every == 0
        if self.step % self.steps_per_epoch == 0 and self.step > 0 and (done == self.cfg.epochs or periodic):
            self.save(f"ckpt_epoch_{done}.pth")
            self.save("current.pth")
            loop.last_save = self.clock()
        return batch

    def _stopped(self, agreed: Agreed) -> None:
        path = self.save("current.pth")
        why = f"signal {signal.Signals(agreed.signal).name}" if agreed.signal else "max-minutes"
        self.metrics.event("stopped", step=self.step, reason=why, checkpoint=str(path) if path else None)
        logger.info("stopped at step %d (%s)", self.step, why)

    def _first_batch(self, stream: BatchStream):  # noqa: ANN202
        """The batch of the run's first step, agreed on by every rank (a rank without one stops them all)."""
        batch, problem = self._fetch(stream, self.step)
        agreed = self.agree(self.observe(None, problem is not None))
        if agreed.failed_rank >= 0:
            raise self._data_failure(problem)
        return batch

    def _announce(self) -> None:
        cfg = self.cfg
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

    def _finish(self, started: float) -> None:
        self.save("current.pth")
        final = self.save("final.pth")
        self.metrics.event(
            "finished",
            step=self.step,
            checkpoint=str(final) if final else None,
            seconds=round(time.perf_counter() - started, 1),
        )
        if self.cfg.budget_minutes > 0:
            minutes = (self.clock() - self.clock_start) / 60
            logger.info("budget %.1f min: finished %d steps in %.1f min", self.cfg.budget_minutes, self.step, minutes)

    def run(self) -> int:
        """Train until the last step, a stop request or a failure; returns the process exit code."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        started = time.perf_counter()
        self._announce()
        now = self.clock()
        loop = LoopState(start=now, last_log=now, last_save=now)
        self.net.train()
        try:
            stream = BatchStream(self.loader, self.sampler, self.steps_per_epoch)
            batch = self._first_batch(stream) if self.step < self.stop_step else None
            while self.step < self.stop_step:
                batch = self.train_one_epoch(stream, batch, loop)
                if loop.stopped:
                    return EXIT_OK
            self.recorder.set(self.step, "finish")
            self._finish(started)
            return EXIT_OK
        except TrainingError as e:
            logger.error("%s", e)
            self.metrics.event("failed", step=self.step, message=str(e))
            return e.exit_code
        except Exception as e:
            if not is_distributed():
                raise
            # a collective that failed (a peer died, a mismatch ran into the timeout) or any other error: say
            # where this rank was, so the ranks' reports can be put side by side
            message = f"rank {self.rank}: {first_line(e)} (at {self.recorder.where()})"
            logger.error("%s", message)
            self.metrics.event("failed", step=self.step, message=message)
            if is_collective_failure(e):
                return EXIT_DISTRIBUTED
            raise
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if self.cfg.record_collectives:
                self.recorder.dump(self.cfg.record_collectives, self.rank)


__all__ = ["DataError", "EXIT_DATA", "EXIT_DISTRIBUTED", "EXIT_NONFINITE", "EXIT_OK", "Trainer", "TrainingError"]
