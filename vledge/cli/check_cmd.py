"""`vledge check`: a bundle and the full PyTorch teacher side by side on the same held-out inputs."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="compare a bundle with its PyTorch teacher: accuracy, agreement, cosine")
    p.add_argument("bundle")
    p.add_argument("--teacher", required=True, help="the teacher checkpoint folder (the PyTorch fallback)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--tolerance", type=float, default=0.02, help="allowed top-1 loss against the teacher (0.02 = 2 points)")
    p.add_argument("--json", dest="json_out", default=None)
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
    from vledge.output import check_writable, write_json

    if args.json_out:
        check_writable(Path(args.json_out).parent, "--json")
    edge = vledge.runtimes.load(args.bundle, device=args.device)
    teacher = load_teacher(args.teacher, allow_pickle=args.allow_pickle)
    data = load_dataset(args.data, args.split, args.data_dir)
    teacher_eval = evaluate(TorchEmbedder(teacher), data, max_samples=args.max_samples, progress=True)
    report = verify_bundle(edge, teacher, data, teacher_eval=teacher_eval, student_eval=None, tolerance=args.tolerance,
                           max_samples=args.max_samples, reference_name="teacher")
    print(report.summary().replace("verify:", "check:", 1))
    if report.agreement is not None:
        print(f"top-1 agreement with the teacher: {report.agreement:.4f}")
    if args.json_out:
        write_json(args.json_out, report.to_dict(), "--json")
    return 0 if report.passed else 1
