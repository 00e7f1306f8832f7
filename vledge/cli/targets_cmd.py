"""`vledge targets`: the targets table, whether each target's runtime can run here, and this CPU's
instruction sets with what they mean for INT8 towers; ``--markdown`` prints the table the docs hold."""

from __future__ import annotations

from vledge.cli.options import add_json_flag, emit_json, json_on_stdout


def add_parser(sub) -> None:
    p = sub.add_parser("targets", help="list deployment targets and whether their runtime runs on this machine")
    p.add_argument("--markdown", action="store_true", help="print the targets table as the docs show it, and nothing else")
    add_json_flag(p, "the targets table and this CPU")
    p.set_defaults(handler=run)


def run(args) -> int:
    from vledge.targets import TABLE_HEADER, TARGETS, markdown_table, table_rows

    if args.markdown:
        print(markdown_table(), end="")
        return 0
    from vledge.cpu import host_cpu
    from vledge.runtimes.selection import available_placements

    available = available_placements()
    rows = [(*TABLE_HEADER[:-1], "runs here as", TABLE_HEADER[-1])]
    for cells, (_, spec) in zip(table_rows(), TARGETS.items(), strict=True):
        reachable = [p for p in spec.chain if p in available]
        here = "no" if not reachable else str(reachable[0]) + ("" if reachable[0] == spec.chain[0] else " (fallback)")
        rows.append((*cells[:-1], here, cells[-1]))
    cpu = host_cpu()
    keys = ["name" if header == "target" else header.replace(" ", "_") for header in rows[0]]
    emit_json(args, {"targets": [dict(zip(keys, row)) for row in rows[1:]],
                     "cpu": {"model": cpu.model, "machine": cpu.machine, "isa": list(cpu.isa), "int8": cpu.int8_note()}})
    if json_on_stdout(args):
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"\nCPU: {cpu.model} ({cpu.machine}); INT8-relevant flags: {', '.join(cpu.isa) or 'none known'}")
    print(f"INT8 here: {cpu.int8_note()}")
    return 0
