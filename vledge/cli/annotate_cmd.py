"""`vledge annotate`: label every image of a folder into CSV or JSON lines, with a review bucket."""

from __future__ import annotations

import logging

from vledge.cli.common import split_list
from vledge.cli.options import LABELS_HELP, add_device_flags, parse_labels

log = logging.getLogger("vledge.annotate")


def add_parser(sub) -> None:
    p = sub.add_parser("annotate", help="label a folder of images into CSV or JSON lines, uncertain ones marked",
                       description="Every image under IMAGES_DIR gets its top labels and scores. An image whose best "
                                   "score is low, or barely ahead of the second, has status 'review'; one that will "
                                   "not decode has status 'error' and the run goes on.")
    p.add_argument("bundle", help="the bundle folder (from vledge compress)")
    p.add_argument("images_dir", help="the folder of images to label")
    p.add_argument("--labels", help=LABELS_HELP + " (default: the bundle's compiled label set)")
    p.add_argument("--templates", help="comma-separated prompt templates with {} (default: the bundle's)")
    p.add_argument("--out", required=True, help="output file: .csv for CSV, anything else for JSON lines")
    p.add_argument("--top-k", type=int, default=3, help="labels written per image")
    p.add_argument("--review-below", type=float, default=0.5, help="review when the best score is under this")
    p.add_argument("--review-margin", type=float, default=0.1,
                   help="review when the best leads the second by less than this")
    p.add_argument("--no-recursive", action="store_true", help="only the folder itself, not its subfolders")
    p.add_argument("--batch-size", type=int, default=32, help="images a tower call")
    add_device_flags(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    import vledge
    from vledge.annotate import annotate, write_annotations
    from vledge.output import check_writable

    check_writable(Path(args.out).resolve().parent, "--out")  # before any image is decoded
    labels = parse_labels(args.labels)
    model = vledge.load(args.bundle, device=args.device, strict=args.strict)
    bad = []

    def tracked(items):
        for a in items:
            if a.error:
                bad.append(a.path)
            yield a

    annotations = annotate(model, args.images_dir, labels, templates=split_list(args.templates),
                           top_k=args.top_k, review_below=args.review_below, review_margin=args.review_margin,
                           recursive=not args.no_recursive, batch_size=args.batch_size)
    counts = write_annotations(tracked(annotations), args.out, args.top_k)
    print(f"{args.out}: {counts['images']} images, {counts['ok']} ok, {counts['review']} to review, "
          f"{counts['error']} that would not decode")
    for path in bad[:20]:
        print(f"  bad image: {path}")
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more (status 'error' in {args.out})")
    return 0
