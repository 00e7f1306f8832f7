"""`vledge bench`: accuracy, latency, memory and size of the teacher and its compressed variants."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="benchmark the teacher, the peer pipelines, the student's FP32/INT8 variants and given bundles",
        description="Rows: teacher PyTorch FP32, teacher ONNX FP32; for a Hugging Face CLIP teacher the peer pipelines "
                    "(Optimum ONNX export and ORT dynamic INT8, optimum-intel OpenVINO and NNCF INT8); student FP32 and "
                    "INT8 on ONNX Runtime and OpenVINO; then every BUNDLE. Each row runs in its own process; the "
                    "report (table, CSV, JSON, plots) is rewritten after every row. With --require, every BUNDLE row "
                    "is checked against the budgets and the exit code is 1 when one misses.",
    )
    p.add_argument("bundles", nargs="*", metavar="BUNDLE", help="bundle folders to measure as they are")
    p.add_argument("--teacher", required=True, help="the teacher checkpoint folder")
    p.add_argument("--student", default=None,
                   help="the FP32 student: a checkpoint folder, or a compress work folder (OUT.work); "
                        "default: distil one with compress's distillation stage (kept in the work folder for reuse)")
    p.add_argument("--rows", default=None,
                   help="comma-separated built-in rows to measure (default: all; 'none': only the BUNDLEs): "
                        "teacher-torch, teacher-onnx, peer-onnx-fp32, peer-onnx-int8, peer-openvino-fp32, "
                        "peer-openvino-int8, student-fp32-ort, student-int8-ort, student-fp32-openvino, "
                        "student-int8-openvino")
    p.add_argument("--require", default=None, metavar="BUDGETS",
                   help="budgets every BUNDLE row must meet, comma-separated KEY<=N / KEY>=N over the row keys "
                        "(results.csv's columns: image_b1_p50_ms, top1, size_mb, python_us, ...) and the derived "
                        "top1_kept, size_ratio, vs_peer_image_b1, vs_peer_top1_pt, ...; "
                        'e.g. "image_b1_p50_ms<=5,top1_kept>=0.97"; exit code 1 when one misses')
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist, digits, a captions file or an image folder")
    p.add_argument("--data-dir", default=None, help="where the data set's files are (Fashion-MNIST IDX files)")
    p.add_argument("--split", default="test", help="the split accuracy is measured on")
    p.add_argument("--out", default="bench-report", help="report folder (results.json/.csv, report.md, PNG plots)")
    p.add_argument("--work-dir", default=None, help="exported variants, the distilled student, logs (default: OUT/work)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of every runtime (default 2)")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate on the first N images (default: all)")
    p.add_argument("--distill-epochs", type=int, default=None, help="when distilling the student: epochs")
    p.add_argument("--distill-samples", type=int, default=None, help="when distilling the student: images per epoch")
    p.add_argument("--no-scaling", dest="scaling", action="store_false", help="skip the batch-size / resolution curves")
    p.add_argument("--repeats", type=int, default=3,
                   help="fresh processes each row is timed in; latencies are their median (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="few repetitions, one process per row: a smoke test, not numbers to quote")
    p.add_argument("--row-timeout", type=float, default=1800.0, help="seconds one row may take (default 1800)")
    p.add_argument("--resume", action="store_true", help="keep the rows an earlier run in OUT finished")
    p.set_defaults(handler=run)


def _rows(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [] if text.strip() == "none" else [r.strip() for r in text.split(",") if r.strip()]


def run(args) -> int:
    import torch  # noqa: F401  the teacher's rows and every variant the bench builds need it: say so before any row runs

    from vledge.bench import BenchConfig, bench
    from vledge.bench.measure import QUICK, Repetitions
    from vledge.bench.report import markdown_table

    config = BenchConfig(
        teacher=args.teacher, bundles=list(args.bundles), data=args.data, data_dir=args.data_dir, split=args.split,
        out=args.out, work_dir=args.work_dir, threads=args.threads, max_samples=args.max_samples,
        student=args.student, rows=_rows(args.rows),
        distill_epochs=args.distill_epochs, distill_samples=args.distill_samples,
        scaling=args.scaling, reps=QUICK if args.quick else Repetitions(), row_timeout=args.row_timeout,
        repeats=1 if args.quick else args.repeats, retries=0 if args.quick else 2,
        resume=args.resume, require=args.require,
    )
    results = bench(config)
    print(markdown_table(results["rows"]))
    if results.get("student"):
        print(f"\nstudent: {results['student']}")
    for reason in results.get("skipped", []):
        print(f"skipped: {reason}")
    if results["budgets"]:
        print("\nbudgets (--require):")
        for budget in results["budgets"]:
            print("  " + budget["line"])
    print("\nwritten: " + ", ".join(results["files"].values()))
    failed = [r["name"] for r in results["rows"] if r.get("status") != "ok"]
    if failed:
        print(f"failed rows: {', '.join(failed)} (see their status and the logs in the work folder)")
    missed = sum(b["status"] != "pass" for b in results["budgets"])
    if missed:
        print(f"{missed} of {len(results['budgets'])} budgets missed")
    return 1 if missed else 0
