"""`vledge check`: a bundle and the full PyTorch teacher side by side on the same held-out inputs."""

from __future__ import annotations

from vledge.cli.options import (add_device_flags, add_json_flag, add_tolerance_flag, check_json_destination, emit_json,
                                json_on_stdout, tolerance_fraction)


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="compare a bundle with its PyTorch teacher: accuracy, agreement, cosine",
                       description="Evaluate the teacher (PyTorch) and the bundle (its runtime) on the same held-out "
                                   "data; exit 0 when the bundle loses at most --tolerance points of top-1, else 1. "
                                   "Needs the compress extra (torch) for the teacher.")
    p.add_argument("bundle", help="the bundle folder (from vledge compress)")
    p.add_argument("--teacher", required=True, help="the teacher checkpoint folder (the PyTorch fallback)")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist, digits, a captions file or an image folder")
    p.add_argument("--data-dir", default=None, help="where the data set's files are (Fashion-MNIST IDX files)")
    p.add_argument("--split", default="test", help="the split both are evaluated on")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate on the first N images (default: all)")
    add_device_flags(p)
    add_tolerance_flag(p, default_points=2.0)
    add_json_flag(p, "the report")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load a teacher that has only pickle weights (.bin/.pt) with "
                        "torch.load(weights_only=True); only for files you trust")
    p.set_defaults(handler=run)


def run(args) -> int:
    import vledge.runtimes
    from vledge.compress.verify import verify_bundle
    from vledge.data import load_dataset
    from vledge.evaluate import TorchEmbedder, evaluate
    from vledge.models import load_teacher

    check_json_destination(args)
    edge = vledge.runtimes.load(args.bundle, device=args.device, strict=args.strict)
    teacher = load_teacher(args.teacher, allow_pickle=args.allow_pickle)
    data = load_dataset(args.data, args.split, args.data_dir)
    teacher_eval = evaluate(TorchEmbedder(teacher), data, max_samples=args.max_samples, progress=True)
    report = verify_bundle(edge, teacher, data, teacher_eval=teacher_eval, student_eval=None,
                           tolerance=tolerance_fraction(args.tolerance), max_samples=args.max_samples,
                           reference_name="teacher")
    if not json_on_stdout(args):
        print("check: " + report.summary().removeprefix("verify: "))
        print(_next_step(args, report.passed))
    emit_json(args, report.to_dict())
    return 0 if report.passed else 1


def _next_step(args, passed: bool) -> str:
    if passed:
        return f"next: vledge run {args.bundle} IMAGE..., or sign it: vledge sign {args.bundle} --key KEY"
    return (f"next: recompress with more distillation (vledge compress --teacher {args.teacher} ... --epochs N), "
            f"or give a larger --tolerance")
