"""Where a process classifying frames spends its memory: VmRSS and VmHWM after each step, in a fresh process.

Steps: imports (numpy, the backend, vledge), reading the bundle, each tower's session, the tokenizer, the
end of ``vledge.load`` (its checks and self-test), the image tower at batch 1 and 8, the text tower at the
tokenizer's max length (77 for CLIP) at batch 1 and 8, and ``classify`` of a 1920x1080 uint8 frame. Load
options given as ``key=value`` go to ``vledge.load`` (``threads=2`` always), e.g. ``self_test=false``.

    python benchmarks/memory_steps.py BUNDLE [--backend onnxruntime|openvino] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

THREADS = 2
LONG_PROMPT = " ".join(["a photo of a person carrying a parcel to the door at night"] * 10)  # past 77 tokens
FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def memory_mb() -> dict[str, float]:
    """This process's resident memory now (VmRSS: RssAnon, the heap and other private memory, plus RssFile, pages
    of mapped files such as the frameworks' libraries) and at its peak so far (VmHWM), in MB."""
    with open("/proc/self/status") as fh:
        fields = dict(line.split(":", 1) for line in fh if line.startswith(FIELDS))
    return {name: round(int(fields[name].split()[0]) / 1024, 1) for name in FIELDS}


class Steps:
    def __init__(self):
        self.rows: list[dict] = []

    def mark(self, step: str) -> None:
        self.rows.append({"step": step, **memory_mb()})


def instrument(steps: Steps) -> None:
    """Marks inside ``vledge.load``: after the bundle is read, after the tokenizer is built, before and after each
    tower opens, after the backend is done with the bundle's bytes."""
    from vledge import runtimes
    from vledge.runtimes.base import Runtime
    from vledge.text import TextTokenizer

    read_bundle, from_bytes = runtimes.read_bundle, TextTokenizer.from_bytes.__func__
    choose, done = Runtime._choose_tower, Runtime._done_reading
    opened: list[str] = []

    def reading(*args, **kwargs):
        bundle = read_bundle(*args, **kwargs)
        steps.mark("bundle read")
        return bundle

    def tokenizing(cls, *args):
        tokenizer = from_bytes(cls, *args)
        steps.mark("tokenizer built")
        return tokenizer

    def choosing(self, kind, on_cpu):
        steps.mark(f"{opened[-1]} tower opened" if opened else "before the first tower opens")
        opened.append(kind)
        return choose(self, kind, on_cpu)

    def finishing(self):
        steps.mark(f"{opened[-1]} tower opened")
        opened.clear()
        done(self)
        steps.mark("backend done reading")

    runtimes.read_bundle, TextTokenizer.from_bytes = reading, classmethod(tokenizing)
    Runtime._choose_tower, Runtime._done_reading = choosing, finishing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "openvino"))
    parser.add_argument("options", nargs="*", help="load options, key=value (values read as JSON)")
    args = parser.parse_args(argv)
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.options)}
    steps = Steps()
    steps.mark("start")
    import numpy as np

    __import__(args.backend)
    import vledge
    from vledge.images import preprocess

    steps.mark("imported numpy, backend, vledge")
    logging.disable(logging.WARNING)
    instrument(steps)
    start = time.perf_counter()
    model = vledge.load(args.bundle, backend=args.backend, threads=THREADS, **options)
    load_s = time.perf_counter() - start
    steps.mark("vledge.load returned")
    size = model.manifest.preprocess.image_size
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    pixels = np.repeat(preprocess(photo, model.manifest.preprocess), 8, axis=0)
    run = model.runtime.run
    run("image", {"pixel_values": pixels[:1]})
    steps.mark("image b1")
    run("image", {"pixel_values": pixels})
    steps.mark("image b8")
    ids, mask = model.tokenizer([LONG_PROMPT], pad_to_max=True)
    feeds = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)}
    run("text", feeds)
    steps.mark(f"text b1 ({ids.shape[1]} tokens)")
    run("text", {k: np.repeat(v, 8, axis=0) for k, v in feeds.items()})
    steps.mark(f"text b8 ({ids.shape[1]} tokens)")
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    steps.mark("a 1920x1080 frame in memory")
    model.classify(frame)
    steps.mark("classify of the frame")
    print(json.dumps({"bundle": args.bundle, "backend": args.backend, "options": options,
                      "load_s": round(load_s, 3), "steps": steps.rows}))
    width = max(len(r["step"]) for r in steps.rows)
    for row in steps.rows:
        print(f"{row['step']:<{width}}" + "".join(f"  {name} {row[name]:6.1f}" for name in FIELDS), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
