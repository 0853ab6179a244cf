"""A cost model of one recurrent step of a plan: a PREDICTION, never a measurement.

`kernel="auto"` (variants.choose) runs the plan of least predicted time per step, and
`python -m triton_lstm.plan` prints the prediction for any shape. Pure: a plan and its layer
shape in, microseconds out; nothing here touches a device.

The model, per step of one launch (all its programs run the step at once):

    critical = STEP_FIXED_US + barriers * BARRIER_US
               + L2 bytes each program must read before its dot / L2_BYTES_PER_US
               + dot flops of each program / DOT_FLOPS_PER_US (x IEEE_DOT_SLOWDOWN for ieee fp32)
    private  = STEP_FIXED_US + bytes of the program's own rows read (xw; dy, gates, c) / L2_BYTES_PER_US
    step     = max(critical, private) * waves + LAUNCH_US / T

- "L2 bytes each program must read": what the variant exchanges (split: all of h, or m and
  h with a projection, forward; all of dpre, and dh with a projection, backward; a K-split
  backward program the four gates of dpre of its half of the units, and its partner's half
  of dh) and what it streams (batch_streamed: all of W_hh, and W_hr, every step; its h and c
  scratch rows).
  Resident weights cost nothing per step.
- The program's own rows do not wait for other programs (xw is prefetched), so their reads
  overlap the critical path: only the longer of the two counts. Stores (y, gates, c, dpre)
  are fire-and-forget and drain behind the next step: not charged.
- waves: programs beyond one per SM share an SM (batch-tiled plans with more batch tiles
  than SMs), cdiv(programs, num_sms).
Every coefficient is an H100 figure from DESIGN.md section 6 (torch 2.11, triton 3.6,
medians of do_bench at T = 1024); sm_80 plans are predicted with the same coefficients, so
an A100 prediction is an H100-calibrated estimate. The dot rate is that of the probes'
M = 16 dots (latency-bound, a fraction of tensor-core peak): a plan whose dots are larger
may run faster than predicted. tests/test_cost.py pins every coefficient to its documented
figure and checks the predictions against the measured probe points (within 30%).
"""
from __future__ import annotations

import dataclasses

from .planning import ELEMENT_BYTES, DeviceLimits, LayerShape, Plan, dot_block, dtype_name

# DESIGN.md section 6: "A Triton grid barrier among up to 128 co-resident programs costs
# about 0.8 us per step".
BARRIER_US = 0.8
# DESIGN.md section 6: "every program reading the whole h (B x H, bf16, 32 KB) from L2 about
# 1.3 us" (with every SM reading at once: one SM's share of L2 bandwidth). The backward's
# "128 KB read per program per step: 4.3-6 us" agrees (5.2 us at this rate).
EXCHANGE_PROBE_BYTES = 32 * 1024
EXCHANGE_PROBE_US = 1.3
L2_BYTES_PER_US = EXCHANGE_PROBE_BYTES / EXCHANGE_PROBE_US  # per program, about 25 KB/us
# DESIGN.md section 6, the batch-tiled probe (one program per 16 rows, W_hh^T [H, 4H]
# resident, one dot [16, H] x [H, 4H] per step, bf16): 0.5-0.6 us per step at H = 32 and
# 2.0 us at H = 128. The step's fixed part (gate maths, the loop, the stores) is the H = 32
# point less its dot; the dot rate is the H = 128 point less the fixed part.
BATCH_PROBE = {32: (0.5, 0.6), 64: (0.9, 1.0), 128: (2.0, 2.0)}  # H: measured us per step
STEP_FIXED_US = 0.45
DOT_FLOPS_PER_US = 2 * 16 * 128 * 4 * 128 / (2.0 - STEP_FIXED_US)  # about 1.35 GFLOP per ms per program
# DESIGN.md section 6: "fp32 with "ieee" runs on FMA units, 4-10x slower"; charged to the dot
# alone at the top of that range, so that a whole step comes out 4-10x slower.
IEEE_DOT_SLOWDOWN = 10.0
# Not in DESIGN.md section 6 (the probes' medians include one launch per 1024 steps): an
# assumed CUDA launch latency, amortised over the sequence; 0.005 us per step at T = 1024.
LAUNCH_US = 5.0
DEFAULT_T = 1024
# DESIGN.md section 6, the split forward probes (bf16, UNITS = 8, 4 warps, one fused dot per
# step, x-projection prefetched): measured us per step by H, what the test checks against.
SPLIT_FORWARD_PROBE = {256: (1.8, 2.0), 512: (2.2, 2.3), 1024: (2.9, 3.0)}


@dataclasses.dataclass(frozen=True)
class StepWork:
    """What one program does per step, the model's input (per program unless said)."""

    programs: int  # in the launch
    barriers: int
    exchanged_bytes: int  # read from L2 before the step's dot can finish: exchange + streamed weights
    private_bytes: int  # the program's own rows read (xw; dy and the saved state)
    dot_flops: int  # 2 M N K summed over the step's dots, padded tiles
    ieee: bool  # fp32 dots on FMA units
    weights_on_chip: bool  # W_hh (and W_hr) resident for the whole sequence


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A predicted time per step (an estimate, labelled so wherever shown) and its parts."""

    us_per_step: float
    barrier_us: float
    exchange_us: float
    dot_us: float
    private_us: float
    waves: int
    work: StepWork

    def as_dict(self) -> dict:
        return {"predicted_us_per_step": round(self.us_per_step, 3),
                "predicted_parts_us": {"barriers": round(self.barrier_us, 3), "exchange_and_stream":
                                       round(self.exchange_us, 3), "dot": round(self.dot_us, 3),
                                       "own_rows": round(self.private_us, 3), "waves": self.waves},
                "bytes_read_per_program_per_step": self.work.exchanged_bytes,
                "dot_flops_per_program_per_step": self.work.dot_flops}


def predict_work(work: StepWork, limits: DeviceLimits, T: int = DEFAULT_T) -> Estimate:
    """The model above applied to `work` on a device with `limits.num_sms` SMs."""
    barrier = work.barriers * BARRIER_US
    exchange = work.exchanged_bytes / L2_BYTES_PER_US
    dot = work.dot_flops / DOT_FLOPS_PER_US * (IEEE_DOT_SLOWDOWN if work.ieee else 1.0)
    private = work.private_bytes / L2_BYTES_PER_US
    waves = -(-work.programs // limits.num_sms)
    step = max(STEP_FIXED_US + barrier + exchange + dot, STEP_FIXED_US + private) * waves + LAUNCH_US / T
    return Estimate(step, barrier, exchange, dot, private, waves, work)


def step_work(plan: Plan, shape: LayerShape) -> StepWork:
    """Per-program work of one step of `plan` (any layer variant) for `shape`."""
    B, H, P, D, dtype = shape
    c = dict(plan.constexprs)
    e = ELEMENT_BYTES[dtype_name(dtype)]
    acc = ELEMENT_BYTES[c["ACC_DTYPE"]]
    backward = plan.kernel.startswith("lstm_bwd")
    has_proj = P != H
    ieee = c["INPUT_PRECISION"] == "ieee" and dtype_name(dtype) in ("fp32", "fp64")
    if plan.variant.startswith("batch"):
        rows = c["BLOCK_B"]  # one batch tile of BLOCK_B rows, all H units
        block_h, block_p = dot_block(H), dot_block(P)
        dot = 2 * rows * 4 * block_h * block_p + (2 * rows * block_h * block_p if has_proj else 0)
        streamed = plan.variant == "batch_streamed"
        w_bytes = (4 * H * P + (H * P if has_proj else 0)) * e
        scratch = 2 * rows * (P + H) * acc if streamed else 0  # h and c read back from the program's scratch
        units, entries = H, P
        exchanged = (w_bytes + scratch) if streamed else 0
        barriers, on_chip = 0, not streamed
    else:
        units, entries = c["UNITS"], c["PROJ_UNITS"]
        rows = -(-B // plan.grid[1])  # rows of one barrier group: a program runs all of them
        m_rows = -(-rows // c["BLOCK_B"]) * c["BLOCK_B"]  # its dots' M, in BLOCK_B sub-tiles
        if not backward:
            exchanged = rows * P * e + (rows * H * e if has_proj else 0)  # all of h (and of m)
            dot = 2 * m_rows * plan.forward_k_rows * 4 * units + (2 * m_rows * c["BLOCK_H"] * entries if has_proj else 0)
        else:  # all of dpre (and of dh); a K-split program its units' share, and its partner's half of dh
            exchanged = (rows * 4 * H * e // plan.k_split + (rows * P * acc if has_proj else 0)
                         + (plan.k_split - 1) * rows * entries * acc)
            dot = (2 * m_rows * 4 * c["BLOCK_H"] * entries // plan.k_split
                   + (2 * m_rows * c["BLOCK_P"] * units if has_proj else 0))
        barriers = 2 if has_proj or plan.k_split > 1 else 1
        on_chip = not c.get("W_STREAMED", False)
        if not on_chip:  # a streamed split plan reads its own W_hh slice every sub-tile
            w_elements = 4 * (c["BLOCK_H"] * entries if backward else c["BLOCK_P"] * units)
            exchanged += w_elements * e * (m_rows // c["BLOCK_B"])
    if backward:  # dy, gates, c_t and c_{t-1} in
        private = rows * (entries * e + 4 * units * acc + 2 * units * acc)
    else:  # xw in
        private = rows * 4 * units * e
    if plan.kernel.endswith("_tiled"):  # the state carried in buffers: c (forward), dh and dc (backward)
        private += rows * ((units + entries) * acc if backward else units * acc)
        if backward:  # c0 (read every step, for the rows at their first), a K-split program's own half of dh
            private += rows * units * e + (plan.k_split - 1) * rows * entries * acc
    return StepWork(plan.programs, barriers, exchanged, private, dot, ieee, on_chip)


def predict(plan: Plan, shape: LayerShape, limits: DeviceLimits, T: int = DEFAULT_T) -> Estimate:
    """Predicted time per step of `plan` for `shape` on `limits` (an estimate, see the module doc).

    Example:
        >>> from triton_lstm import variants, planning
        >>> import torch
        >>> shape = planning.LayerShape(16, 1024, 1024, 1, torch.bfloat16)
        >>> limits = planning.DeviceLimits.sm90()
        >>> plan = variants.choose("forward", shape, planning.GateOptions(), limits)
        >>> round(predict(plan, shape, limits).us_per_step, 1)
        3.3
    """
    return predict_work(step_work(plan, shape), limits, T)
