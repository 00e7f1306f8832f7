"""Where a training run stands, and its resumable state on disk without pickle: tensors in safetensors,
everything else in JSON."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vledge.errors import CheckpointError, ConfigError

STATE_DIR = ".train_state"
STATE_FORMAT = 2  # 2: the loop's state under "loop"


@dataclass
class LoopState:
    """What the loop knows after ``epoch`` finished epochs; the fields up to ``initial`` survive a resume.

    ``best`` is the best validation metric so far (None before the first), ``best_epoch`` the epoch that
    scored it (0: the model as it was given), ``bad_epochs`` the epochs since the last improvement.
    """

    epoch: int = 0
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    initial: dict | None = None  # the validation fields of the model as given, when it was scored
    epochs_run: int = 0  # in this session
    skipped_images: int = 0  # in this session, on this rank
    stopped_early: bool = False

    def to_dict(self) -> dict:
        keys = ("epoch", "best", "best_epoch", "bad_epochs", "history", "initial")
        return {k: getattr(self, k) for k in keys}


def prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Check ``out`` for a new run (empty, or ``overwrite``) or a resumed one, and create it."""
    has_run = out.exists() and any(out.iterdir())
    if resume and not (out / STATE_DIR).is_dir():
        raise CheckpointError(f"cannot resume: {out} holds no training state (no epoch finished there)")
    if has_run and not resume and not overwrite:
        raise ConfigError(f"{out} is not empty; pass --resume to continue that run or --overwrite to start again")
    if has_run and overwrite and not resume:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for pid, entries in state_dict["state"].items():
        for key, value in entries.items():
            if hasattr(value, "shape"):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = flat.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_train_state(out: Path, model, optimizer, scheduler, state: LoopState) -> None:
    """Write the state after a finished epoch, atomically (a temp folder renamed into place)."""
    from safetensors.torch import save_file

    final = out / STATE_DIR
    tmp = out / f"{STATE_DIR}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    meta = {"format": STATE_FORMAT, "loop": state.to_dict(), "optimizer": opt_meta, "scheduler": scheduler.state_dict()}
    meta["scheduler"].pop("lr_lambdas", None)
    (tmp / "state.json").write_text(json.dumps(meta))
    if final.exists():
        old = out / f"{STATE_DIR}.old"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def load_train_state(out: Path, model, optimizer, scheduler) -> LoopState:
    """Restore model, optimizer and scheduler in place; returns where the loop stood."""
    from safetensors.torch import load_file

    from vledge.models.checkpoint import load_state

    folder = out / STATE_DIR
    if not (folder / "state.json").is_file():
        raise CheckpointError(f"nothing to resume in {out}: no finished epoch was saved there")
    meta = json.loads((folder / "state.json").read_text())
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"the training state in {folder} was written by another vledge version: "
                              "start the run again with --overwrite")
    load_state(model, load_file(str(folder / "model.safetensors")), folder)
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(folder / "optimizer.safetensors")), meta["optimizer"]))
    scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
    return LoopState(**meta["loop"])
