"""`vledge watch`: classify a video file, URL or camera and print events as JSON lines."""

from __future__ import annotations

import json
import logging

from vledge.cli.common import output_lines, read_json_file, split_list
from vledge.cli.options import LABELS_HELP, add_device_flags, parse_labels

log = logging.getLogger("vledge.watch")


def add_parser(sub) -> None:
    p = sub.add_parser("watch", help="events from a video file, RTSP/HTTP URL or camera (/dev/video0), as JSON lines",
                       description="Sample frames of SOURCE, classify them (or regions of them) and print an "
                                   "event line when a label of interest enters or leaves.")
    p.add_argument("bundle", help="the bundle folder (from vledge compress)")
    p.add_argument("source", help="a video file, rtsp:// or http(s):// URL, /dev/videoN or a camera number")
    p.add_argument("--labels", help="the labels of interest; " + LABELS_HELP)
    p.add_argument("--negatives", help="comma-separated negative prompts that suppress a hit when they score higher")
    p.add_argument("--threshold", type=float, default=0.5, help="probability a label needs to hit")
    p.add_argument("--enter-after", type=float, default=0.0, help="seconds of hits before 'enter'")
    p.add_argument("--leave-after", type=float, default=0.0, help="seconds of misses before 'leave'")
    p.add_argument("--rules", help='JSON file: {"rules": [{"label", "threshold", "enter_after", "leave_after", '
                                   '"leave_threshold"}], "negatives": [...]}; overrides the four flags above')
    p.add_argument("--templates", help="comma-separated prompt templates with {} for the label (default: the bundle's)")
    p.add_argument("--fps", type=float, default=None, help="frames classified per second of video (default: every frame)")
    p.add_argument("--regions", help="JSON lines of boxes to classify as crops (zones, or per-frame detections)")
    p.add_argument("--whole-frame", action="store_true", help="with --regions, classify the whole frame too")
    p.add_argument("--out", default=None, help="write the JSON lines here (default: stdout)")
    p.add_argument("--frames", action="store_true", help="also write one line of scores per classified frame")
    live = p.add_mutually_exclusive_group()
    live.add_argument("--live", dest="live", action="store_const", const=True, default=None,
                      help="drop frames when inference falls behind (default for URLs and cameras)")
    live.add_argument("--no-live", dest="live", action="store_const", const=False,
                      help="classify every sampled frame, waiting for inference (default for files)")
    p.add_argument("--realtime", action="store_true", help="play a file at its own pace, as if it were a camera")
    p.add_argument("--batch-size", type=int, default=None, help="frames a batch, files only (default: timed)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a network source")
    p.add_argument("--reconnect", type=int, default=0, help="times to reopen a live source that fails")
    p.add_argument("--log-every", type=float, default=10.0, help="seconds between fps/latency log lines")
    add_device_flags(p)
    p.set_defaults(handler=run)


def events_config(args):
    from vledge.errors import ConfigError
    from vledge.events import EventConfig

    if args.rules:
        config = EventConfig.from_dict(read_json_file(args.rules, "--rules file"))
        extra = split_list(args.negatives) or []
        return EventConfig(config.rules, tuple(dict.fromkeys(list(config.negatives) + extra))) if extra else config
    labels = parse_labels(args.labels)
    if not labels:
        raise ConfigError("give the labels of interest: --labels 'a person,a car' (or --rules FILE)")
    return EventConfig.simple(labels, args.threshold, args.enter_after, args.leave_after,
                              split_list(args.negatives) or [])


def run(args) -> int:
    import vledge

    config = events_config(args)
    model = vledge.load(args.bundle, device=args.device, strict=args.strict)
    stream = vledge.stream(
        model, args.source, events=config, templates=split_list(args.templates), fps=args.fps,
        regions=args.regions, whole_frame=True if args.whole_frame else None, batch_size=args.batch_size,
        live=args.live, realtime=args.realtime, timeout=args.timeout, reconnect=args.reconnect,
        log_every=args.log_every,
    )
    count = 0
    with output_lines(args.out) as out:
        for result in stream:
            if args.frames and not result.final:
                out.write(json.dumps({"kind": "frame", **result.to_dict()}, ensure_ascii=False) + "\n")
            for event in result.events:
                out.write(event.to_json() + "\n")
                count += 1
            out.flush()  # a reader of a pipe sees each event as it happens
    stats = stream.stats.snapshot()
    log.info("%d events; %d frames decoded, %d classified (%.1f fps), %d dropped, latency p50 %s ms",
             count, stats["decoded"], stats["processed"], stats["fps"], stats["dropped"], stats["latency_p50_ms"])
    return 0
