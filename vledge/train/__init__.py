"""Training (needs torch): ``vledge.train.train(TrainConfig(...), out)``; the loop it shares with distillation
is :func:`vledge.train.loop.run_loop`."""

__all__ = ["TrainConfig", "TrainReport", "train"]


def __getattr__(name):
    # Lazy, so that importing a submodule (vledge.train.distributed, used by the compress stages) does not
    # pull in the data sets, evaluation and models that training itself needs.
    if name == "TrainConfig":
        from vledge.train.config import TrainConfig

        return TrainConfig
    if name in ("TrainReport", "train"):
        from vledge.train import run

        return getattr(run, name)
    raise AttributeError(f"module 'vledge.train' has no attribute {name!r}")
