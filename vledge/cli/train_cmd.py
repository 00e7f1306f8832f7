"""`vledge train`: joint training on real data, or LoRA fine-tuning of a teacher."""

from __future__ import annotations

from vledge.cli.options import add_json_flag, check_json_destination, emit_json, json_on_stdout


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a dual encoder (contrastive + cross-entropy), or LoRA-tune one",
                       description="Train a teacher on real data: every epoch is validated and the best one is kept "
                                   "in --out. Unset flags take the TrainConfig defaults (or --config). Needs the "
                                   "compress extra (torch).")
    p.add_argument("--data", default=None, help="fashion-mnist (default), digits, a captions file or an image folder")
    p.add_argument("--data-dir", default=None, help="where the data set's files are (Fashion-MNIST IDX files)")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--config", default=None, help="a TrainConfig JSON file; flags override it")
    p.add_argument("--image-tower", default=None, help="resnet18, resnet50, mobilenet_v3_small, mobilenet_v3_large, vit")
    p.add_argument("--text-layers", type=int, default=None, help="BERT layers")
    p.add_argument("--text-hidden", type=int, default=None, help="BERT hidden size (heads = hidden / 64, at least 2)")
    p.add_argument("--embed-dim", type=int, default=None, help="size of the shared embedding space")
    p.add_argument("--image-size", type=int, default=None, help="image side in pixels the towers take")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training images")
    p.add_argument("--batch-size", type=int, default=None, help="images a step")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW, warm-up then cosine)")
    p.add_argument("--contrastive-weight", type=float, default=None, help="λ in L = L_ce + λ·L_contrastive")
    p.add_argument("--max-samples", type=int, default=None, help="train on at most this many images")
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation, order and augmentation")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--lora", action="store_true", help="fine-tune --base with LoRA adapters; save only the adapter")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (alpha is twice the rank)")
    p.add_argument("--base", default=None, help="the teacher to adapt with --lora")
    p.add_argument("--strict", action="store_true", help="fail on an image that will not decode instead of skipping it")
    p.add_argument("--resume", action="store_true", help="continue from the last finished epoch in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    add_json_flag(p, "the training summary")
    p.set_defaults(handler=run)


def build_config(args):
    from vledge.train.config import TrainConfig

    values = TrainConfig.from_file(args.config).to_dict() if args.config else TrainConfig().to_dict()
    flags = {
        "data": args.data, "data_dir": args.data_dir, "embed_dim": args.embed_dim, "image_size": args.image_size,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "contrastive_weight": args.contrastive_weight, "max_samples": args.max_samples, "num_threads": args.threads,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.image_tower:
        values["image_tower"] = {**values["image_tower"], "arch": args.image_tower}
    if args.text_layers or args.text_hidden:
        text = dict(values["text_tower"])
        if args.text_layers:
            text["num_layers"] = args.text_layers
        if args.text_hidden:
            text.update(hidden_size=args.text_hidden, num_heads=max(2, args.text_hidden // 64), intermediate_size=4 * args.text_hidden)
        values["text_tower"] = text
    if args.strict:
        values["strict_images"] = True
    if args.lora:
        values["lora"] = {"r": args.lora_r, "alpha": 2 * args.lora_r}
    return TrainConfig.from_dict(values)


def run(args) -> int:
    from vledge.train.distributed import is_main
    from vledge.train import train

    check_json_destination(args)
    config = build_config(args)
    report = train(config, args.out, base=args.base, resume=args.resume, overwrite=args.overwrite)
    if not is_main():  # under torchrun only rank 0 reports
        return 0
    last = report.history[-1]["val"] if report.history else {}
    summary = {"out": report.out, "best_epoch": report.best_epoch, "best_val": report.best_val_top1,
               "last_val": {k: last.get(k) for k in ("top1", "top5", "recall")},
               "seconds": round(report.seconds, 1), "skipped_images": report.skipped_images}
    if not json_on_stdout(args):
        print(_summary_line(report))
        print(f"next: vledge compress --teacher {report.out} --target cpu --data {config.data} --out {report.out}-bundle")
    emit_json(args, summary)
    return 0


def _summary_line(report) -> str:
    best = f"validation top-1 {report.best_val_top1:.4f}" if report.best_val_top1 is not None else "no validation metric"
    skipped = f"; {report.skipped_images} images skipped (would not decode)" if report.skipped_images else ""
    return (f"train: wrote {report.out} in {report.seconds:.0f} s; best epoch {report.best_epoch} of "
            f"{len(report.history)}, {best}{skipped}")
