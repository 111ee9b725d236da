"""Resume restores everything it can and names what it could not: a release checkpoint's LARS momentum (mapped
through the release model's parameter order), its grad scaler and epoch; another world size continues."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from trainer.checkpointing import release_parameter_names
from trainer.config import get_args_parser, resolve_config
from trainer.engine import Trainer

#: The release model's module order (models/slotcon.py of the public release): the optimiser's state is indexed
#: by the parameters in this order.
RELEASE_ORDER = ("encoder_q.", "encoder_k.", "projector_q.", "projector_k.", "center", "grouping_q.", "grouping_k.")


def _trainer(args: list[str], *extra: str) -> Trainer:
    return Trainer(resolve_config(get_args_parser().parse_args([*args, *extra])))


def _release_checkpoint(trainer: Trainer, epoch: int) -> dict:
    """The release's full checkpoint of ``trainer``: DDP keys in the release's module order, LARS state indexed by
    the release's parameter order (teacher parameters included, without state), the scaler and the epoch."""
    state = trainer.model.state_dict()

    def rank(key: str) -> int:
        return next((i for i, p in enumerate(RELEASE_ORDER) if key.startswith(p)), len(RELEASE_ORDER))

    keys = sorted(state, key=rank)  # stable: keeps each module's own order
    model = {f"module.{k}": state[k] for k in keys}
    names = [k for k in keys if k != "center" and not k.endswith(("running_mean", "running_var", "batches_tracked"))]
    params = dict(trainer.model.named_parameters())
    opt_state = {
        i: {"mu": trainer.optimizer.state[params[n]]["mu"].clone()}
        for i, n in enumerate(names)
        if params[n] in trainer.optimizer.state
    }
    optimizer = {"state": opt_state, "param_groups": [{"params": list(range(len(names))), "lr": 0.1}]}
    args = argparse.Namespace(arch="resnet18", dim_hidden=64, dim_out=32, num_prototypes=8)
    scaler = (trainer.scaler or torch.amp.GradScaler("cpu")).state_dict()  # the release always trained in fp16
    return {"model": model, "optimizer": optimizer, "scaler": scaler, "epoch": epoch, "args": args}


def test_release_checkpoint_restores_lars_momentum_scaler_and_epoch(
    tiny_train_args: list[str], tmp_path: Path, caplog
) -> None:
    source = _trainer(tiny_train_args, "--precision", "fp16", "--output-dir", str(tmp_path / "src"))
    source.sampler.set_epoch(0)
    for batch in list(iter(source.loader))[:2]:
        source.train_step(batch)
        source.step += 1
    source.scaler.update(new_scale=512.0)
    ckpt = _release_checkpoint(source, epoch=1)
    assert release_parameter_names(ckpt["model"])[0].startswith("encoder_q.")
    path = tmp_path / "release.pth"
    torch.save(ckpt, path)

    with caplog.at_level(logging.INFO):
        resumed = _trainer(tiny_train_args, "--precision", "fp16", "--resume", str(path))
    assert resumed.step == 3  # epoch 1 completed, 3 steps an epoch
    assert resumed.scaler.get_scale() == 512.0
    src_params, dst_params = dict(source.model.named_parameters()), dict(resumed.model.named_parameters())
    trained = [n for n, p in src_params.items() if p in source.optimizer.state]
    assert len(trained) > 10
    for name in trained:
        want = source.optimizer.state[src_params[name]]["mu"]
        torch.testing.assert_close(resumed.optimizer.state[dst_params[name]]["mu"], want, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(dst_params[name], src_params[name], rtol=0, atol=0, msg=name)
    assert f"optimizer momentum ({len(trained)} buffers)" in caplog.text
    assert "not restored: RNG (the release saves none)" in caplog.text


def test_a_buffer_of_the_wrong_shape_is_named_and_the_rest_restored(
    tiny_train_args: list[str], tmp_path: Path, caplog
) -> None:
    source = _trainer(tiny_train_args, "--output-dir", str(tmp_path / "src"))
    source.sampler.set_epoch(0)
    source.train_step(next(iter(source.loader)))
    ckpt = _release_checkpoint(source, epoch=1)
    first = min(ckpt["optimizer"]["state"])
    ckpt["optimizer"]["state"][first]["mu"] = torch.zeros(3)
    path = tmp_path / "release.pth"
    torch.save(ckpt, path)
    with caplog.at_level(logging.INFO):
        resumed = _trainer(tiny_train_args, "--resume", str(path))
    name = release_parameter_names(ckpt["model"])[first]
    assert f"momentum of {name} (shape (3,)" in caplog.text
    assert "grad scaler (this run trains without one)" in caplog.text
    assert len(resumed.optimizer.state) == len(ckpt["optimizer"]["state"]) - 1
