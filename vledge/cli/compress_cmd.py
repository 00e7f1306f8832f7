"""`vledge compress`: teacher -> verified edge bundle for one target."""

from __future__ import annotations

from pathlib import Path

from vledge.cli.options import (LABELS_HELP, add_json_flag, add_tolerance_flag, check_json_destination, emit_json,
                                json_on_stdout, parse_labels, tolerance_fraction)


def add_parser(sub) -> None:
    from vledge.targets import TARGETS

    p = sub.add_parser("compress", help="distil, prune, quantize, export and verify a teacher into an edge bundle",
                       description="Each stage logs one line as it finishes; the bundle is written only when it "
                                   "passes the gate (at most --tolerance points of top-1 lost against the teacher). "
                                   "Needs the compress extra (torch).")
    p.add_argument("--teacher", required=True, help="teacher folder: vledge checkpoint, Hugging Face CLIP, or LoRA adapter")
    p.add_argument("--adapter", default=None, help="a LoRA adapter folder to merge into --teacher")
    p.add_argument("--target", required=True, help=f"one of: {', '.join(TARGETS.names())} (vledge targets)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--student", default=None,
                   help="a registered student (vledge students), or \"teacher\" to quantize the teacher itself "
                        "without distillation (default: the one for the teacher's kind)")
    p.add_argument("--data", default=None, help="fashion-mnist (default), digits, a captions file or an image folder")
    p.add_argument("--data-dir", default=None, help="where the data set's files are (Fashion-MNIST IDX files)")
    p.add_argument("--labels", default=None, help=LABELS_HELP + "; compiled into the bundle (default: the data's classes)")
    p.add_argument("--config", default=None, help="a recipe JSON (CompressConfig); flags override it")
    p.add_argument("--epochs", type=int, default=None, help="distillation epochs (default: the recipe's)")
    p.add_argument("--max-samples", type=int, default=None, help="distillation images per epoch (default: all)")
    p.add_argument("--prune", type=float, default=None, help="structured pruning ratio, 0 skips (default: the recipe's, 0)")
    add_tolerance_flag(p, default_points=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--work-dir", default=None, help="where finished stages are kept (default: OUT.work)")
    p.add_argument("--cache-dir", default=None, help="cache the teacher's outputs here, reused across stages and runs")
    add_json_flag(p, "the full report")
    p.add_argument("--resume", action="store_true", help="reuse the stages an interrupted run finished")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle (and work folder)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load a teacher that has only pickle weights (.bin/.pt) with "
                        "torch.load(weights_only=True); only for files you trust")
    p.set_defaults(handler=run)


def run(args) -> int:
    from vledge.errors import CheckpointError, VerificationError

    labels = parse_labels(args.labels)
    if not Path(args.teacher).is_dir():  # before any folder is made for the run
        raise CheckpointError(f"--teacher {args.teacher} is not a folder; give a checkpoint from vledge train, "
                              f"a Hugging Face CLIP folder or a LoRA adapter folder")
    check_json_destination(args)
    from vledge.compress import compress, resolve_config

    distill = {k: v for k, v in {"epochs": args.epochs, "max_samples": args.max_samples, "num_threads": args.threads}.items() if v is not None}
    overrides = {
        "student": args.student, "data": args.data, "data_dir": args.data_dir,
        "tolerance": tolerance_fraction(args.tolerance),
        "distill": distill or None, "prune": {"ratio": args.prune} if args.prune is not None else None,
        "cache_dir": args.cache_dir,
    }
    config = resolve_config(args.target, args.config, overrides)
    try:
        report = compress(args.teacher, out=args.out, config=config, adapter=args.adapter, labels=labels,
                          resume=args.resume, overwrite=args.overwrite, work_dir=args.work_dir,
                          allow_pickle=args.allow_pickle)
    except VerificationError as exc:
        if exc.report is not None:
            emit_json(args, exc.report.to_dict())
        raise
    from vledge.train.distributed import is_main

    if not is_main():  # under torchrun only rank 0 reports
        return 0
    if not json_on_stdout(args):
        seconds = sum(stage.seconds for stage in report.stages)
        print(f"compress: wrote {args.out} for {args.target} in {seconds:.0f} s; {report.headline()}")
        data = f" --data {args.data}" if args.data else ""
        print(f"next: vledge check {args.out} --teacher {args.teacher}{data}   then: vledge run {args.out} IMAGE...")
    emit_json(args, report.to_dict())
    return 0
