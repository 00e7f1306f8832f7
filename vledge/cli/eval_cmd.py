"""`vledge eval`: zero-shot accuracy and retrieval recall of a checkpoint or a bundle."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="zero-shot top-1/top-5 and recall@k of a checkpoint or bundle")
    p.add_argument("model", help="a checkpoint folder (vledge, Hugging Face CLIP, LoRA adapter) or a bundle")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist, digits, a captions file or an image folder")
    p.add_argument("--data-dir", default=None, help="where the data set's files are (Fashion-MNIST IDX files)")
    p.add_argument("--split", default="test", help="the split evaluated")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate on the first N images (default: all)")
    p.add_argument("--batch-size", type=int, default=256, help="images a tower call")
    p.add_argument("--device", default="auto", help="for bundles: auto, cpu, cuda, tensorrt, NPU, ...")
    p.add_argument("--json", dest="json_out", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load a checkpoint that has only pickle weights (.bin/.pt) with "
                        "torch.load(weights_only=True); only for files you trust")
    p.set_defaults(handler=run)


def run(args) -> int:
    from vledge.data import load_dataset
    from vledge.evaluate import evaluate, format_report, load_embedder
    from vledge.output import check_writable, write_json

    if args.json_out:
        check_writable(Path(args.json_out).parent, "--json")
    embedder = load_embedder(args.model, device=args.device, allow_pickle=args.allow_pickle)
    data = load_dataset(args.data, args.split, args.data_dir)
    report = evaluate(embedder, data, batch_size=args.batch_size, max_samples=args.max_samples, progress=True)
    print(format_report(report, title=f"{args.model} on {data.describe()}"))
    if args.json_out:
        out = {"model": str(args.model), "data": data.describe(), **report.to_dict()}
        write_json(args.json_out, out, "--json")
    return 0
