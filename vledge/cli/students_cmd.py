"""`vledge students`: the registry of student architectures, with their cost on the teachers they are sized for."""

from __future__ import annotations

import importlib.util
import logging

from vledge.cli.options import add_json_flag, emit_json, json_on_stdout

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("students", help="list the registered student architectures, their parameters and MACs")
    p.add_argument("--no-cost", action="store_true",
                   help="skip the parameter and MAC counts (they build every student on torch's meta device)")
    p.add_argument("--teacher", default=None, metavar="DIR",
                   help="rank the students for this teacher folder: each built from it, cheapest image tower first")
    p.add_argument("--target", default="cpu", help="with --teacher: the target whose precision sizes the bundle")
    add_json_flag(p, "the students")
    p.set_defaults(handler=run)


def _rank(args) -> int:
    from vledge.compress.students.ranking import rank_students
    from vledge.models import load_teacher
    from vledge.targets import get_target

    target = get_target(args.target)
    teacher = load_teacher(args.teacher)
    ranked = rank_students(teacher, target.precision)
    emit_json(args, {"teacher": args.teacher, "target": target.name, "precision": target.precision,
                     "image_size": teacher.preprocess.image_size, "students": [r.to_dict() for r in ranked]})
    if json_on_stdout(args):
        return 0
    print(f"students for {args.teacher} ({teacher.preprocess.image_size} px), sized for {target.name} "
          f"({target.precision}); latency estimated by MACs, cheapest image tower first:")
    for r in ranked:
        if r.error:
            print(f"  {r.name}: does not fit ({r.error})")
            continue
        print(f"  {r.name}: {r.params / 1e6:.2f}M params, ~{r.size_bytes / 1e6:.1f} MB, {r.image_macs / 1e6:.1f} MMACs "
              f"an image, {r.text_macs / 1e6:.1f} MMACs a prompt; inherits {'+'.join(r.inherits) or 'nothing'}")
    return 0


def _tower(entry: dict) -> str:
    if "shrink" in entry:
        return "teacher's, shrunk " + ", ".join(f"{k} x{v}" for k, v in entry["shrink"].items())
    extras = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "arch")
    return f"{entry['arch']}({extras})" if extras else entry["arch"]


def _cost_line(cost, label: str) -> str:
    inherits = "+".join(cost.inherits) or "nothing"
    return (f"  on {label} ({cost.image_size} px): {cost.params / 1e6:.2f}M params, "
            f"{cost.image_macs / 1e9:.3f} GMACs an image, {cost.text_macs / 1e9:.3f} GMACs a prompt; "
            f"inherits {inherits}")



def _cost(cost) -> dict:
    return {"image_size": cost.image_size, "params": cost.params, "image_macs": cost.image_macs,
            "text_macs": cost.text_macs, "inherits": list(cost.inherits)}


def _json_rows(specs, measure, measure_teacher, defaults: dict) -> list[dict]:
    from vledge.compress.students import TEACHER, TEACHER_DESCRIPTION

    teachers = sorted({t for spec in specs for t in spec.teachers})
    rows = [{"name": TEACHER, "description": TEACHER_DESCRIPTION,
             "teachers": {t: _cost(measure_teacher(t)) for t in teachers} if measure else None}]
    for spec in specs:
        rows.append({"name": spec.name, "description": spec.description, "image": _tower(spec.image_tower),
                     "text": _tower(spec.text_tower), "inherit": spec.inherit, "default": defaults.get(spec.name),
                     "cost": {t: _cost(measure(spec, t)) for t in spec.teachers} if measure else None})
    return rows


def run(args) -> int:
    if args.teacher:
        return _rank(args)
    from vledge.compress.students import (
        CAMERA_IMAGE_SIZE, DEFAULT_CAMERA_STUDENT, DEFAULT_CLIP_STUDENT, DEFAULT_STUDENT, TEACHER, TEACHER_DESCRIPTION,
        list_students,
    )

    measure = measure_teacher = None
    if not args.no_cost and importlib.util.find_spec("torch") is None:
        log.info("students: parameter and MAC counts need torch (pip install \"vledge[compress]\"); listing without them")
    elif not args.no_cost:
        from vledge.compress.students.reference import measure, measure_teacher

    specs = list_students()
    defaults = {DEFAULT_STUDENT: "default", DEFAULT_CLIP_STUDENT: f"default for CLIP under {CAMERA_IMAGE_SIZE} px",
                DEFAULT_CAMERA_STUDENT: f"default for CLIP from {CAMERA_IMAGE_SIZE} px"}
    emit_json(args, _json_rows(specs, measure, measure_teacher, defaults))
    if json_on_stdout(args):
        return 0
    print(f"{TEACHER}\n  {TEACHER_DESCRIPTION}")
    if measure is not None:
        for name in sorted({t for spec in specs for t in spec.teachers}):
            cost = measure_teacher(name)
            print(f"  the teacher {name} itself: {cost.params / 1e6:.2f}M params, {cost.image_macs / 1e9:.3f} GMACs an "
                  f"image, {cost.text_macs / 1e9:.3f} GMACs a prompt ({cost.image_size} px)")
    for spec in specs:
        default = f" [{defaults[spec.name]}]" if spec.name in defaults else ""
        print(f"{spec.name}{default}\n  {spec.description}\n  image: {_tower(spec.image_tower)}\n"
              f"  text:  {_tower(spec.text_tower)}\n  inherit weights: {'yes' if spec.inherit else 'no'}")
        if measure is not None:
            for teacher in spec.teachers:
                print(_cost_line(measure(spec, teacher), teacher))
    return 0
