"""`vledge compress`: teacher -> verified edge bundle for one target."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    from vledge.targets import TARGETS

    p = sub.add_parser("compress", help="distil, prune, quantize, export and verify a teacher into an edge bundle")
    p.add_argument("--teacher", required=True, help="teacher folder: vledge checkpoint, Hugging Face CLIP, or LoRA adapter")
    p.add_argument("--adapter", default=None, help="a LoRA adapter folder to merge into --teacher")
    p.add_argument("--target", required=True, help=f"one of: {', '.join(TARGETS.names())}")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--student", default=None, help="a registered student (vledge students), or \"teacher\" to quantize the teacher itself without distillation; default: the one for the teacher's kind")
    p.add_argument("--data", default=None, help="fashion-mnist (default), digits, a captions file or an image folder")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--labels", default=None, help="a file of labels, one per line, to compile into the bundle")
    p.add_argument("--config", default=None, help="a recipe JSON (CompressConfig); flags override it")
    p.add_argument("--epochs", type=int, default=None, help="distillation epochs")
    p.add_argument("--max-samples", type=int, default=None, help="distillation images per epoch")
    p.add_argument("--prune", type=float, default=None, help="structured pruning ratio (0 skips)")
    p.add_argument("--tolerance", type=float, default=None, help="allowed top-1 loss against the teacher (0.02 = 2 points)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--work-dir", default=None, help="where finished stages are kept (default: OUT.work)")
    p.add_argument("--cache-dir", default=None, help="cache the teacher's outputs here, reused across stages and runs")
    p.add_argument("--report", default=None, help="also write the full report to this JSON file")
    p.add_argument("--resume", action="store_true", help="reuse the stages an interrupted run finished")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle (and work folder)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load a teacher that has only pickle weights (.bin/.pt) with "
                        "torch.load(weights_only=True); only for files you trust")
    p.set_defaults(handler=run)


def _read_labels(path: str) -> list[str]:
    from vledge.errors import ConfigError

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read labels file {path}: {exc.strerror}") from None
    try:
        labels = json.loads(text) if path.endswith(".json") else [line.strip() for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ConfigError(f"labels file {path} is not valid JSON: {exc}") from None
    if not labels:
        raise ConfigError(f"labels file {path} holds no labels")
    return labels


def run(args) -> int:
    from vledge.compress import compress, resolve_config
    from vledge.errors import VerificationError
    from vledge.output import check_writable, write_json

    distill = {k: v for k, v in {"epochs": args.epochs, "max_samples": args.max_samples, "num_threads": args.threads}.items() if v is not None}
    overrides = {
        "student": args.student, "data": args.data, "data_dir": args.data_dir, "tolerance": args.tolerance,
        "distill": distill or None, "prune": {"ratio": args.prune} if args.prune is not None else None,
        "cache_dir": args.cache_dir,
    }
    config = resolve_config(args.target, args.config, overrides)
    labels = _read_labels(args.labels) if args.labels else None
    if args.report:
        check_writable(Path(args.report).parent, "--report")
    try:
        report = compress(args.teacher, out=args.out, config=config, adapter=args.adapter, labels=labels,
                          resume=args.resume, overwrite=args.overwrite, work_dir=args.work_dir,
                          allow_pickle=args.allow_pickle)
    except VerificationError as exc:
        if args.report and exc.report is not None:
            write_json(args.report, exc.report.to_dict(), "--report")
        raise
    from vledge.train.distributed import is_main

    if not is_main():  # under torchrun only rank 0 reports
        return 0
    print(report.summary())
    print(report.headline())
    if args.report:
        write_json(args.report, report.to_dict(), "--report")
    return 0
