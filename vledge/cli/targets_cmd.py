"""`vledge targets`: the targets table, whether each target's runtime can run here, and this CPU's
instruction sets with what they mean for INT8 towers."""

from __future__ import annotations

from vledge.cli.options import add_json_flag, emit_json, json_on_stdout


def add_parser(sub) -> None:
    p = sub.add_parser("targets", help="list deployment targets and whether their runtime runs on this machine")
    add_json_flag(p, "the targets table and this CPU")
    p.set_defaults(handler=run)


def run(args) -> int:
    from vledge.cpu import host_cpu
    from vledge.runtimes.selection import available_placements
    from vledge.targets import TARGETS

    available = available_placements()
    rows = [("target", "format", "precision", "runs here as", "install", "description")]
    for name, spec in TARGETS.items():
        reachable = [p for p in spec.chain if p in available]
        here = "no" if not reachable else str(reachable[0]) + ("" if reachable[0] == spec.chain[0] else " (fallback)")
        rows.append((name, spec.export_format, spec.precision, here, f'vledge[{spec.extra}]', spec.description))
    cpu = host_cpu()
    emit_json(args, {"targets": [dict(zip(("name", "format", "precision", "runs_here_as", "install", "description"), row))
                                 for row in rows[1:]],
                     "cpu": {"model": cpu.model, "machine": cpu.machine, "isa": list(cpu.isa), "int8": cpu.int8_note()}})
    if json_on_stdout(args):
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"\nCPU: {cpu.model} ({cpu.machine}); INT8-relevant flags: {', '.join(cpu.isa) or 'none known'}")
    print(f"INT8 here: {cpu.int8_note()}")
    return 0
