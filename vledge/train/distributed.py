"""Data parallelism on PyTorch DDP, launched by ``torchrun``: join the process group, shard each global
batch, gather embeddings, and let rank 0 alone write.

Every helper is the identity (or does nothing) in a single process, so the training loops call them
unconditionally and run exactly as before when not launched by torchrun.

Why the gather: the contrastive and affinity losses compare every image of the global batch with every
text. Each rank embeds its share of the images; the shares are gathered with their gradients and put
back in the order one process would have used. Texts are embedded on every rank (the same texts in the
same order, so the same dropout masks), and every rank computes the whole-batch loss. DDP averages the
gradients and the gather's backward sums each share's gradient over the ranks, so one step equals one
process's step on the global batch, up to float rounding. BatchNorm statistics stay per rank (SyncBatchNorm
does not run on CPU), so towers with BatchNorm match only approximately.
"""

from __future__ import annotations

import atexit
import logging
import os
from datetime import timedelta
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from vledge.errors import ConfigError

log = logging.getLogger(__name__)

BACKEND_ENV = "VLEDGE_DIST_BACKEND"  # gloo or nccl; default: nccl when CUDA is available, else gloo
TIMEOUT_ENV = "VLEDGE_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 60  # the other ranks wait while rank 0 validates, exports and verifies
BACKENDS = ("gloo", "nccl")


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the process that validates and writes checkpoints, logs and bundles (rank 0)."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment; False in a single process.

    Idempotent. ``backend`` (or ``$VLEDGE_DIST_BACKEND``) defaults to nccl when CUDA is available, else gloo.
    Ranks other than 0 log warnings only.
    """
    if is_distributed():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but {', '.join(missing)} is not set: launch with torchrun, which sets them")
    backend = backend or os.environ.get(BACKEND_ENV) or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend not in BACKENDS:
        raise ConfigError(f"distributed backend must be one of {', '.join(BACKENDS)}, got {backend!r} (from ${BACKEND_ENV}?)")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    minutes = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_MIN))
    dist.init_process_group(backend, timeout=timedelta(minutes=minutes))
    atexit.register(shutdown)
    if rank() != 0:
        logging.getLogger("vledge").setLevel(logging.WARNING)  # one process reports progress
    log.info("data parallel: %d processes, %s backend", world, backend)
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device() -> torch.device:
    """Where this rank computes: its own GPU under nccl, else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def shard(indices: Sequence[int]) -> np.ndarray:
    """This rank's share of one global batch: every world_size-th item from position ``rank``."""
    return np.asarray(indices)[rank() :: world_size()]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_floats(values: Sequence[float], src: int = 0) -> list[float]:
    """``values`` as rank ``src`` holds them, on every rank."""
    if not is_distributed():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device())
    dist.broadcast(tensor, src)
    return tensor.tolist()


def broadcast_flag(flag: bool, src: int = 0) -> bool:
    return bool(broadcast_floats([1.0 if flag else 0.0], src)[0])


def broadcast_text(text: str | None, src: int = 0) -> str:
    """Rank ``src``'s string on every rank (UTF-8 bytes in a tensor: nothing is pickled)."""
    if not is_distributed():
        return text or ""
    data = (text or "").encode() if rank() == src else b""
    size = int(broadcast_floats([len(data)], src)[0])
    buffer = torch.zeros(size, dtype=torch.uint8, device=device())
    if rank() == src:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buffer, src)
    return buffer.cpu().numpy().tobytes().decode()


def all_reduce_sum(values: dict[str, float]) -> dict[str, float]:
    """Each metric summed over the ranks (the same dict back in a single process)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device())
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist()))


def same_on_every_rank(text: str) -> bool:
    """Whether every rank holds the same ``text`` (compared by hash); the same answer on every rank."""
    if not is_distributed():
        return True
    import hashlib

    mine = hashlib.sha256(text.encode()).hexdigest()
    differs = 0.0 if broadcast_text(mine) == mine else 1.0
    return all_reduce_sum({"differs": differs})["differs"] == 0


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of rank ``src``'s ``module`` into the others' (same architecture)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src)


class _GatherRows(torch.autograd.Function):
    """All-gather of equally sized row blocks; backward sums each block's gradient over the ranks."""

    @staticmethod
    def forward(ctx, block: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(block) for _ in range(dist.get_world_size())]
        dist.all_gather(out, block.contiguous())
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's copy of the loss reads every rank's rows
        return grad[dist.get_rank()]


def _counts(n: int) -> list[int]:
    sizes = [torch.zeros(1, dtype=torch.int64, device=device()) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([n], dtype=torch.int64, device=device()))
    return [int(s) for s in sizes]


def gather_rows(tensor: torch.Tensor, counts: list[int] | None = None) -> torch.Tensor:
    """Every rank's rows of ``tensor`` (sizes may differ), rank after rank, gradients kept."""
    if not is_distributed():
        return tensor
    counts = counts or _counts(tensor.shape[0])
    pad = max(counts) - tensor.shape[0]
    if pad:
        tensor = torch.cat([tensor, tensor.new_zeros((pad, *tensor.shape[1:]))])
    stacked = _GatherRows.apply(tensor.to(device()))
    return torch.cat([stacked[r, :c] for r, c in enumerate(counts)])


class GlobalBatch:
    """The items that every rank kept of one global batch, in the order one process would see them.

    ``chunk`` is the global batch's indices (the same on every rank); ``kept`` those this rank decoded.
    """

    def __init__(self, chunk: Sequence[int], kept: np.ndarray):
        kept = np.asarray(kept, dtype=np.int64)
        if not is_distributed():
            self.counts, self.order, self.indices = [len(kept)], None, kept
            return
        self.counts = _counts(len(kept))
        gathered = gather_rows(torch.from_numpy(kept), self.counts).cpu().numpy()
        position = {int(i): p for p, i in enumerate(chunk)}
        order = np.argsort([position[int(i)] for i in gathered], kind="stable")
        self.order = torch.from_numpy(order)
        self.indices = gathered[order]

    def usable(self) -> bool:
        """In-batch losses need two items, and every rank needs one for its forward pass."""
        return len(self.indices) >= 2 and min(self.counts) > 0

    def captions(self, data, variant: int, local: list[str]) -> list[str]:
        """The whole batch's captions in order: cheap to rebuild on every rank, so no strings travel."""
        if self.order is None:
            return local
        return [data.caption(int(i), variant) for i in self.indices]

    def rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a per-item tensor -> the whole batch's rows, in the single-process order."""
        if self.order is None:
            return tensor
        return gather_rows(tensor, self.counts)[self.order.to(tensor.device)]


class JointEncode(nn.Module):
    """Both towers of a dual encoder in one forward, so DDP sees (and syncs) a whole step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels, input_ids, attention_mask):
        return self.model.encode_image(pixels), self.model.encode_text(input_ids, attention_mask)


def data_parallel(model: nn.Module) -> nn.Module:
    """``(pixels, ids, mask) -> (image, text)`` embeddings of ``model``: DDP-wrapped under torchrun.

    Build it after freezing what the loss does not use: DDP expects a gradient for every trainable parameter.
    """
    joint = JointEncode(model)
    if not is_distributed():
        return joint
    from torch.nn.parallel import DistributedDataParallel

    ids = [local_rank()] if device().type == "cuda" else None
    return DistributedDataParallel(joint, device_ids=ids)
