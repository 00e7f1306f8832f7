"""`vledge run`: classify images with a bundle from the shell."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="classify images with a bundle")
    p.add_argument("bundle")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--labels", default=None, help="comma-separated labels (default: the bundle's compiled label set)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=run)


def run(args) -> int:
    import vledge

    model = vledge.load(args.bundle, device=args.device)
    labels = [label.strip() for label in args.labels.split(",") if label.strip()] if args.labels is not None else None
    for path, prediction in zip(args.images, model.classify(args.images, labels=labels, top_k=args.top_k)):
        print(f"{path}: " + ", ".join(f"{name} {prob:.3f}" for name, prob in prediction.top))
    return 0
