"""`vledge labels`: show a bundle's compiled label set, or compile a new one into it on the device."""

from __future__ import annotations

from vledge.cli.common import split_list
from vledge.cli.options import add_device_flags


def add_parser(sub) -> None:
    p = sub.add_parser("labels", help="show or replace a bundle's compiled label set (no re-compression)",
                       description="Without --set: list the bundle's compiled labels. With --set: embed the new "
                                   "labels with the bundle's own text tower and write them into it, re-hashed.")
    p.add_argument("bundle", help="the bundle folder (from vledge compress)")
    p.add_argument("--set", dest="label_file", metavar="FILE",
                   help='labels, one a line (.txt) or JSON: ["a cat", ...] or {"names": [...], "templates": [...]}')
    p.add_argument("--templates", help="comma-separated prompt templates with {} (default: the file's, else the bundle's)")
    add_device_flags(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from vledge.relabel import compile_labels, read_label_file

    if args.label_file is None:
        import vledge

        label_set = vledge.load(args.bundle, device=args.device, strict=args.strict).label_set
        if label_set is None:
            print(f"{args.bundle}: no compiled label set (add one with --set FILE)")
            return 0
        print(f"{args.bundle}: {len(label_set.names)} labels, templates {label_set.templates or ['{}']}")
        for name in label_set.names:
            print(f"  {name}")
        return 0
    names, templates = read_label_file(args.label_file)
    templates = split_list(args.templates) or templates
    done = compile_labels(args.bundle, names, templates, device=args.device, strict=args.strict,
                          source=str(args.label_file))
    print(f"{args.bundle}: compiled {len(done['names'])} labels x {len(done['templates'])} templates "
          f"in {done['seconds']:.2f} s; the manifest hashes were rewritten")
    return 0
