"""The split variant's compile report: every split plan of a few shapes compiled for sm_80 and
sm_90 without a GPU, with where each program's weight slice lives and what the PTX shows.

    python -m triton_lstm.split_report
"""
from __future__ import annotations

import torch

from .compile_check import TARGETS, compile_plans
from .planning import GateOptions, dtype_name
from .split import plan_split, resident_slice_bytes

REPORT_B = (1, 64)  # one batch tile and four
REPORT_H = (64, 256, 512, 1024)
REPORT_DTYPES = (torch.bfloat16, torch.float32)  # fp16 compiles as bf16 does


def report_plans(Bs=REPORT_B, Hs=REPORT_H, dtypes=REPORT_DTYPES,
                 options=GateOptions(peephole=True, cell_clip=True, grad_clip=True), projections=(False, True)) -> list:
    """(B, H, dtype, plans, capability) for each shape of the report that has split plans (1
    program per SM assumed); with a projection P = H // 4."""
    rows = []
    for cc, limits in TARGETS.items():
        for dtype in dtypes:
            for H in Hs:
                for proj in projections:
                    for B in Bs:
                        plans = plan_split(B, H, dtype, options, limits, P=H // 4 if proj else None)
                        if plans is not None:
                            rows.append((B, H, dtype, plans, cc))
    return rows


def compile_report(rows=None, workers: int | None = None) -> list[dict]:
    """One dict per compiled split plan: shape, plan, registers, spills, shared memory, programs,
    co-residency and where the W_hh slice lives; printed by `python -m triton_lstm.split_report`."""
    rows = report_plans() if rows is None else rows
    items = [(plan, cc) for *_, plans, cc in rows for plan in (plans.forward, plans.backward) if plan is not None]
    results = compile_plans(items, workers)
    table = []
    for B, H, dtype, plans, cc in rows:
        for plan in (plans.forward, plans.backward):
            if plan is None:
                continue
            r = results[(plan, cc)]
            slice_bytes = resident_slice_bytes(plan)
            if not r.ok or r.spill_bytes:
                where = "NOT resident (spills)" if r.ok else "compile error"
            elif r.shared_bytes >= slice_bytes:
                where = "shared memory"
            else:
                where = "registers"
            table.append(dict(
                target=f"sm_{cc}", kernel=plan.kernel, B=B, H=H,
                projection=plan.constexpr("HAS_PROJ"), dtype=dtype_name(dtype),
                UNITS=plan.constexpr("UNITS"), PROJ_UNITS=plan.constexpr("PROJ_UNITS"),
                BLOCK_B=plan.constexpr("BLOCK_B"), warps=plan.num_warps,
                programs=plan.programs, registers=r.registers, spill_bytes=r.spill_bytes,
                shared_bytes=r.shared_bytes, programs_per_sm=r.max_programs_per_sm,
                co_resident=r.ok and plan.programs <= TARGETS[cc].num_sms * r.max_programs_per_sm,
                slice_bytes=slice_bytes, w_slice=where, release=r.release_atomic, acquire=r.acquire_atomic,
                aligned=plan.constexpr("ALIGNED"), cg_loads=r.cg_loads, cg_vector_loads=r.cg_vector_loads,
                error=r.error))
    return table


def _main() -> None:
    table = compile_report()
    columns = list(table[0])
    print(" | ".join(c for c in columns if c != "error"))
    for row in table:
        print(" | ".join(str(row[c]) for c in columns if c != "error") + (f"  <-- {row['error'][:200]}"
                                                                              if row["error"] else ""))


if __name__ == "__main__":
    _main()
