"""`vledge students`: the registry of student architectures."""

from __future__ import annotations

from vledge.cli.options import add_json_flag, emit_json, json_on_stdout


def add_parser(sub) -> None:
    p = sub.add_parser("students", help="list the registered student architectures")
    add_json_flag(p, "the students")
    p.set_defaults(handler=run)


def _tower(entry: dict) -> str:
    if "shrink" in entry:
        return "teacher's, shrunk " + ", ".join(f"{k} x{v}" for k, v in entry["shrink"].items())
    extras = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "arch")
    return f"{entry['arch']}({extras})" if extras else entry["arch"]


def run(args) -> int:
    from vledge.compress.students import DEFAULT_CLIP_STUDENT, DEFAULT_STUDENT, TEACHER, TEACHER_DESCRIPTION, list_students

    rows = [{"name": TEACHER, "description": TEACHER_DESCRIPTION}]
    for spec in list_students():
        rows.append({"name": spec.name, "description": spec.description, "image": _tower(spec.image_tower),
                     "text": _tower(spec.text_tower), "inherit": spec.inherit,
                     "default": spec.name == DEFAULT_STUDENT, "default_for_clip": spec.name == DEFAULT_CLIP_STUDENT})
    emit_json(args, rows)
    if json_on_stdout(args):
        return 0
    print(f"{TEACHER}\n  {TEACHER_DESCRIPTION}")
    for spec in list_students():
        default = " [default]" if spec.name == DEFAULT_STUDENT else " [default for CLIP]" if spec.name == DEFAULT_CLIP_STUDENT else ""
        print(f"{spec.name}{default}\n  {spec.description}\n  image: {_tower(spec.image_tower)}\n"
              f"  text:  {_tower(spec.text_tower)}\n  inherit weights: {'yes' if spec.inherit else 'no'}")
    return 0
