"""``python -m trainer`` with faults injected on chosen ranks, for the multi-rank tests (run under torchrun).

Usage: ``torchrun --standalone --nproc_per_node=N tests/trainer/faulty_trainer.py TRAINER_ARGS...`` with
``SLOTCON_TEST_FAULTS`` set to a JSON object; each fault maps a rank (as a string) to its parameter:

- ``clock_rate``: this rank's clock runs this many times faster than real time (time skew);
- ``slow_loader``: seconds of sleep before each image this rank loads;
- ``nan_at``: the global step whose batch gets a NaN pixel on this rank (a non-finite loss there only);
- ``unreadable_at``: the global step whose first image is an unreadable file on this rank;
- ``sigterm_at``: the global step at whose start this rank receives SIGTERM;
- ``sigkill_at``: the global step at whose start this rank is killed (SIGKILL), in torchrun's first attempt only;
- ``extra_args``: flags appended to this rank's command line (another ``--data`` on one rank);
- ``log_alone``: any value: this rank decides its timed log lines on its own clock, as the trainer once did
  (the negative control: the ranks then issue different collectives).

At the end each rank saves its student parameters to ``OUT/params-rank{R}.pt``, where OUT is
``SLOTCON_TEST_OUT``. Nothing here is product code: the trainer runs unchanged, only patched from outside.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

from trainer import data as trainer_data
from trainer.__main__ import main
from trainer.engine import Trainer

RANK = int(os.environ.get("RANK", 0))
FAULTS = {k: v.get(str(RANK)) for k, v in json.loads(os.environ.get("SLOTCON_TEST_FAULTS", "{}")).items()}
OUT = Path(os.environ["SLOTCON_TEST_OUT"])


def _patch() -> None:
    if FAULTS.get("clock_rate"):
        rate, origin = float(FAULTS["clock_rate"]), time.perf_counter()
        Trainer.clock = lambda self: origin + (time.perf_counter() - origin) * rate  # type: ignore[method-assign]
    if FAULTS.get("slow_loader"):
        delay, get = float(FAULTS["slow_loader"]), trainer_data.SeededTwoViews.__getitem__

        def slow_get(self, item):  # noqa: ANN001, ANN202
            time.sleep(delay)
            return get(self, item)

        trainer_data.SeededTwoViews.__getitem__ = slow_get  # type: ignore[method-assign]

    forward_backward, fetch = Trainer.forward_backward, Trainer._fetch

    def faulty_forward_backward(self: Trainer, batch):  # noqa: ANN001, ANN202
        if FAULTS.get("sigterm_at") is not None and self.step == int(FAULTS["sigterm_at"]):
            os.kill(os.getpid(), signal.SIGTERM)
        first_attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)) == 0
        if FAULTS.get("sigkill_at") is not None and self.step == int(FAULTS["sigkill_at"]) and first_attempt:
            os.kill(os.getpid(), signal.SIGKILL)
        if FAULTS.get("nan_at") is not None and self.step == int(FAULTS["nan_at"]):
            crops, coords, flags = batch
            crops = [c.clone() for c in crops]
            crops[0][0, :, 3, 3] = float("nan")
            batch = (crops, coords, flags)
        return forward_backward(self, batch)

    def faulty_fetch(self: Trainer, stream, step: int):  # noqa: ANN001, ANN202
        if FAULTS.get("unreadable_at") is not None and step == int(FAULTS["unreadable_at"]):
            broken = OUT / f"broken-rank{RANK}.jpg"
            broken.write_bytes(b"this is not a JPEG")
            local = self.cfg.batch_size // self.world
            epoch = step // self.steps_per_epoch
            self.sampler.inner.set_epoch(epoch)
            first = list(self.sampler.inner)[(step - epoch * self.steps_per_epoch) * local]
            self.loader.dataset.dataset.paths[first] = broken
        return fetch(self, stream, step)

    Trainer.forward_backward = faulty_forward_backward  # type: ignore[method-assign]
    Trainer._fetch = faulty_fetch  # type: ignore[method-assign]

    if FAULTS.get("log_alone") is not None:
        agree = Trainer.agree

        def agree_but_log_alone(self: Trainer, view):  # noqa: ANN001, ANN202
            return dataclasses.replace(agree(self, view), log_due=view.log_due)

        Trainer.agree = agree_but_log_alone  # type: ignore[method-assign]

    run = Trainer.run

    def run_and_save_params(self: Trainer) -> int:
        code = run(self)
        params = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        torch.save({"params": params, "step": self.step, "code": code}, OUT / f"params-rank{RANK}.pt")
        return code

    Trainer.run = run_and_save_params  # type: ignore[method-assign]


if __name__ == "__main__":
    _patch()
    sys.exit(main([*sys.argv[1:], *(FAULTS.get("extra_args") or [])]))
