"""`vledge eval`: zero-shot accuracy and retrieval recall of a checkpoint or a bundle, with the metric names
of LAION's CLIP_benchmark in its JSON."""

from __future__ import annotations

from vledge.cli.options import add_device_flags, add_json_flag, check_json_destination, emit_json, json_on_stdout

DESCRIPTION = """Zero-shot top-1/top-5, mean per-class recall and retrieval recall@k, under CLIP_benchmark's metric names.
--templates takes a file (one template a line, or a JSON list) or a template, and may be repeated;
CLIP_benchmark's {c} is read as {}. --classes takes a file of class names in the data set's class order
(one a line, or a JSON list), or a JSON object mapping each class (folder name, CSV label) to its name.
A captions file or a folder without train/ and test/ subfolders is one set: it has no --split.
Retrieval ranks ordinally: candidates by score, exactly equal scores (a repeated caption's copies) in the
data's order, earlier first, so an image's caption ranks behind the copies of it earlier in the file."""


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="zero-shot top-1/top-5, per-class recall and recall@k of a checkpoint or bundle",
                       description=DESCRIPTION)
    p.add_argument("model", help="a checkpoint folder (vledge, Hugging Face CLIP, LoRA adapter) or a bundle")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist, digits, a captions file or an image folder")
    p.add_argument("--data-dir", default=None, help="where the data set's files are (Fashion-MNIST IDX files)")
    p.add_argument("--split", default=None,
                   help="train or test (default: test for built-in sets and train/ + test/ folders; a captions file "
                        "or a plain folder is used whole and has no split)")
    p.add_argument("--templates", action="append", default=None, metavar="FILE_OR_TEMPLATE",
                   help="prompt templates: a file or a template such as 'a photo of a {}.' (repeatable; default: "
                        "the data set's)")
    p.add_argument("--classes", default=None, metavar="FILE", help="the class names to prompt with (default: the data "
                                                                   "set's class names)")
    p.add_argument("--recall-k", default="1,5,10", help="comma-separated k for retrieval recall@k")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate on the first N images (default: all)")
    p.add_argument("--batch-size", type=int, default=256, help="images a tower call")
    add_device_flags(p)
    add_json_flag(p, "the metrics, prompts, split and model hash")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load a checkpoint that has only pickle weights (.bin/.pt) with "
                        "torch.load(weights_only=True); only for files you trust")
    p.set_defaults(handler=run)


def _ks(text: str) -> list[int]:
    from vledge.errors import ConfigError

    try:
        return [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise ConfigError(f"--recall-k takes comma-separated whole numbers, e.g. 1,5,10; got {text!r:.60}") from None


def run(args) -> int:
    from vledge.data import load_dataset
    from vledge.eval_prompts import read_classes, read_templates
    from vledge.evaluate import evaluate, evaluation_record, format_report, load_embedder, recall_ks

    check_json_destination(args)
    ks = recall_ks(_ks(args.recall_k))
    templates = read_templates(args.templates) if args.templates else None
    embedder = load_embedder(args.model, device=args.device, allow_pickle=args.allow_pickle, strict=args.strict)
    data = load_dataset(args.data, args.split, args.data_dir, strict_split=True)
    classes = read_classes(args.classes, data.classes) if args.classes else None
    report = evaluate(embedder, data, classes=classes, templates=templates, batch_size=args.batch_size,
                      max_samples=args.max_samples, progress=True, ks=ks)
    if not json_on_stdout(args):
        print(format_report(report, title=f"{args.model} on {data.describe()}"))
    emit_json(args, evaluation_record(report, embedder, args.model, data, args.split))
    return 0
