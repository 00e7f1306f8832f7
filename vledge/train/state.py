"""Resumable training state without pickle: tensors in safetensors, everything else in JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vledge.errors import CheckpointError

STATE_DIR = ".train_state"


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


def save_train_state(out: Path, model, optimizer, scheduler, *, epoch: int, best: float, history: list) -> None:
    """Write the state after a finished epoch, atomically (a temp folder renamed into place)."""
    from safetensors.torch import save_file

    final = out / STATE_DIR
    tmp = out / f"{STATE_DIR}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    meta = {"epoch": epoch, "best": best, "history": history, "optimizer": opt_meta, "scheduler": scheduler.state_dict()}
    meta["scheduler"].pop("lr_lambdas", None)
    (tmp / "state.json").write_text(json.dumps(meta))
    if final.exists():
        old = out / f"{STATE_DIR}.old"
        os.replace(final, old)
        os.replace(tmp, final)
        _rmtree(old)
    else:
        os.replace(tmp, final)


def load_train_state(out: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer and scheduler; returns the JSON metadata (epoch, best, history)."""
    from safetensors.torch import load_file

    from vledge.models.checkpoint import load_state

    folder = out / STATE_DIR
    if not (folder / "state.json").is_file():
        raise CheckpointError(f"nothing to resume in {out}: no finished epoch was saved there")
    meta = json.loads((folder / "state.json").read_text())
    load_state(model, load_file(str(folder / "model.safetensors")), folder)
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(folder / "optimizer.safetensors")), meta["optimizer"]))
    scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
    return meta


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
