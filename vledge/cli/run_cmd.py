"""`vledge run`: classify images with a bundle from the shell."""

from __future__ import annotations

from vledge.cli.options import (LABELS_HELP, add_device_flags, add_json_flag, check_json_destination, emit_json,
                                json_on_stdout, parse_labels)


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="classify images with a bundle",
                       description="Print the top labels of each image, with their probabilities.")
    p.add_argument("bundle", help="the bundle folder (from vledge compress)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--labels", default=None, help=LABELS_HELP + " (default: the bundle's compiled label set)")
    p.add_argument("--top-k", type=int, default=5, help="labels shown per image")
    add_device_flags(p)
    add_json_flag(p, "the results")
    p.set_defaults(handler=run)


def run(args) -> int:
    import vledge

    labels = parse_labels(args.labels)
    check_json_destination(args)
    model = vledge.load(args.bundle, device=args.device, strict=args.strict)
    results = []
    for path, prediction in zip(args.images, model.classify(args.images, labels=labels, top_k=args.top_k)):
        results.append({"image": path, **prediction.to_dict()})
        if not json_on_stdout(args):
            print(f"{path}: " + ", ".join(f"{name} {prob:.3f}" for name, prob in prediction.top))
    emit_json(args, results)
    return 0
