"""`vledge students`: the registry of student architectures, with their cost on the teachers they are sized for."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("students", help="list the registered student architectures, their parameters and MACs")
    p.add_argument("--no-cost", action="store_true",
                   help="skip the parameter and MAC counts (they build every student on torch's meta device)")
    p.set_defaults(handler=run)


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


def run(args) -> int:
    from vledge.compress.students import (
        CAMERA_IMAGE_SIZE, DEFAULT_CAMERA_STUDENT, DEFAULT_CLIP_STUDENT, DEFAULT_STUDENT, TEACHER, TEACHER_DESCRIPTION,
        list_students,
    )

    measure = None
    if not args.no_cost:
        from vledge.compress.students.reference import measure, measure_teacher

    specs = list_students()
    print(f"{TEACHER}\n  {TEACHER_DESCRIPTION}")
    if measure is not None:
        for name in sorted({t for spec in specs for t in spec.teachers}):
            cost = measure_teacher(name)
            print(f"  the teacher {name} itself: {cost.params / 1e6:.2f}M params, {cost.image_macs / 1e9:.3f} GMACs an "
                  f"image, {cost.text_macs / 1e9:.3f} GMACs a prompt ({cost.image_size} px)")
    for spec in specs:
        default = {DEFAULT_STUDENT: " [default]", DEFAULT_CLIP_STUDENT: f" [default for CLIP under {CAMERA_IMAGE_SIZE} px]",
                   DEFAULT_CAMERA_STUDENT: f" [default for CLIP from {CAMERA_IMAGE_SIZE} px]"}.get(spec.name, "")
        print(f"{spec.name}{default}\n  {spec.description}\n  image: {_tower(spec.image_tower)}\n"
              f"  text:  {_tower(spec.text_tower)}\n  inherit weights: {'yes' if spec.inherit else 'no'}")
        if measure is not None:
            for teacher in spec.teachers:
                print(_cost_line(measure(spec, teacher), teacher))
    return 0
