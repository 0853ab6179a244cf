"""What the compile matrix allows a split plan (kernels/lstm_split.py), pure: the limits read off
compiling every plan for sm_80 / sm_86 / sm_89 / sm_90 on each supported triton release, and the
rules derived from them (warps, slice budgets, the widest backward per release). Each limit says
which compile found it; triton_lstm.split_planning searches the plans within them.
"""
from __future__ import annotations

from .planning import ELEMENT_BYTES, MIN_DOT, DeviceLimits, GateOptions, Plan, ieee_fp32

# From the split compile report (sm_80 and sm_90, `python -m triton_lstm.split_report`):
# - BLOCK_B = 64 spills in almost every plan; 16 never does, so a larger batch gets more
#   batch tiles (grid axis 1, each tile with its own barrier) instead of taller tiles.
# - A forward slice of up to 64 KB is spill-free (bf16 H = 1024, UNITS = 8, 8 warps: 240
#   registers, the slice in shared memory); 128 KB spilled while the kernel loaded W_hh with
#   runtime strides, one element per register. It now spells out W_hh's contiguous strides,
#   so where ALIGNED the slice loads as 16-byte vectors and 128 KB slices are spill-free
#   (sm_90, bf16 / fp16 H = 768 and 1024 and fp32 H = 512, 16 units, two directions): per-tile
#   230-235 registers without lengths (with lengths 255 and 72 bytes spilled), tiled 160-168
#   with or without them. Unaligned (H = 1000) 128 KB slices still spill 112-736 bytes.
# - The backward reads dpre_t one gate at a time, in BACKWARD_K_CHUNKS chunks along K its dot
#   is batched over where BLOCK_H >= 8 PROJ_UNITS, so the warps split K (kernels/lstm_split.py;
#   one dot over all of dpre_t spilled from H = 512). Spill-free up to H = 512 with 16 units,
#   256 with 32, 128 with 64, slices up to 128 KB; H = 1024 only ALIGNED without lengths.
#   Past that the backward plan is None: the batch-tiled backward runs on the saved state.
MAX_BLOCK_B = 16
FORWARD_UNITS = (8, 16, 32, 64)  # 4 * UNITS gate columns: 8 is DESIGN.md section 6's fastest
BACKWARD_UNITS = (16, 32, 64)  # the backward dot's N is UNITS itself: >= 16
RESIDENT_SLICE_MAX_BYTES = 64 * 1024
ALIGNED_RESIDENT_SLICE_MAX_BYTES = 128 * 1024  # forwards without lengths, and tiled ones with them
BACKWARD_SLICE_MAX_BYTES = 128 * 1024
# With a projection the backward also holds W_hr's columns of its units: at H = 1024 (or 768),
# P = H / 4 and 16 units that is 128 KB + 8 KB, spill-free since the slices load as vectors
# (sm_90, with or without lengths and resets: 208-244 registers, 168 KB of shared memory; on
# sm_80 it does not fit, fits_shared_memory)
PROJ_BACKWARD_SLICE_MAX_BYTES = 136 * 1024
BACKWARD_MAX_BLOCK_H = {16: 512, 32: 256, 64: 128}  # by UNITS
# With H and P multiples of 16 (ALIGNED, see `aligned`) the exchanged dpre rows load as 16-byte
# vectors instead of one scalar load and one 64-bit address per element (256 of them per thread
# and step at H = 1024): 16 units then reach H = 1024 (250-255 registers, 0 spills, sm_80 and
# sm_90, a 128 KB slice in shared memory). With lengths that spilled 32-40 bytes on sm_90 until
# the slice, too, loaded as vectors (W_hh's strides spelled out): 246 registers, 0 spills, with
# every gate option, lengths and resets.
ALIGNED_BACKWARD_MAX_BLOCK_H = {16: 1024, 32: 256, 64: 128}
BACKWARD_K_CHUNKS = 4
# At BLOCK_H = 1024 eight chunks, one 128-wide chunk per warp: four spilled 64 bytes on sm_90
# without the gate options (bf16, fp16), eight spill nothing with or without them (255 registers).
WIDE_BACKWARD_K_CHUNKS = 8
# With lengths (HAS_LENGTHS) each step also carries the frozen state and per-row masks and
# times in registers (compile matrix, sm_80 / sm_90): forwards of 32 or more units, or with a
# slice over 32 KB (64 KB when ALIGNED), spill. Streamed forwards (no slice held) do not: 32
# units with lengths, resets and every gate option took 162-232 registers, 0 spills (sm_80 /
# sm_90, bf16 and fp32, H = 1024, two directions), so those are weighed up to 32 units.
LENGTHS_FORWARD_MAX_UNITS = 16
LENGTHS_SLICE_MAX_BYTES = 32 * 1024
ALIGNED_LENGTHS_SLICE_MAX_BYTES = 64 * 1024  # ALIGNED's vector loads of h: 245-255 registers at 64 KB
# - A projection adds a W_hr slice and a second dot per direction, chunked along K the same way
#   (PROJ_CHUNKS): the limits above then hold with it too (P = H / 4 and P = H - 1). Unchunked,
#   its forwards spilled from 32 units (16 with lengths) and its backwards from P = 128.
# Four warps suffice for slices up to 16 KB, but a projection of 32+ units spills there (32-312 B); 8 do not.
FOUR_WARPS_SLICE_BYTES = 16 * 1024
FOUR_WARPS_PROJ_MAX_UNITS = 16
POISON = 1 << 30  # kernels/helpers.py's; barriers * programs must stay below it
# The tiled kernels' largest barrier group: the issue's largest batch (one group covers B <= 256).
MAX_TILED_ROWS = 256
# The tiled forwards compile with room to spare (96-212 registers, 0 spills, sm_80 / sm_90, B = 64
# and 256, H up to 1024, with lengths and projections). The tiled backward carries more across
# its sub-tile loops: at H = 1024 (16 units, ALIGNED) it spilled 224 bytes on sm_90 with 8 or 16
# K chunks and 8 or 16 warps (now it need not: WIDE_TILED_BACKWARD_BLOCK_H), and at H = 512
# with lengths or a projection 8-152 bytes with 4 or 8 chunks, none with 16 (244-254
# registers); H = 256 with P = 255 and lengths spills 40-64 bytes with 4 or 8, none with 16. So its widest H is the unaligned table's, at BLOCK_H >= 16
# PROJ_UNITS it takes 16 chunks along K, and its slices stay within 64 KB (fp32 H = 512, 128 KB,
# spilled 40-260 bytes: see WIDE_FP32_TILED_BACKWARD_BLOCK_H for what holds it now; with lengths
# 68 KB slices spill 60-104 bytes on sm_90). Its dm dot takes
# 16 chunks along BLOCK_P >= 16 UNITS too: with 4, H = 256, P = 255, lengths and every gate
# option spilled 24-40 bytes once the matrix compiled what a launch runs (jit_kernel, aligned
# pointers); 16 chunks: 234-252 registers, 0 spills.
TILED_BACKWARD_MAX_BLOCK_H = {16: 512, 32: 256, 64: 128}
TILED_WIDE_K_CHUNKS = 16
TILED_BACKWARD_SLICE_MAX_BYTES = 64 * 1024
# At BLOCK_H = 1024 (16-bit, 16 units, 16 chunks, ALIGNED, no projection) what spilled was the
# four gates' dpre loads the compiler issued at once (the slice itself now loads as vectors):
# with a CTA barrier after each gate's dot (kernels/lstm_split.py, BLOCK_H >= 1024) it is
# spill-free on sm_80 and sm_90 with or without lengths and resets (254-255 registers, a 128
# KB slice, 160 KB of shared memory); with a projection it still spilled 8-40 bytes.
WIDE_TILED_BACKWARD_BLOCK_H = 1024
WIDE_TILED_BACKWARD_SLICE_MAX_BYTES = 128 * 1024
# The same in fp32 at BLOCK_H = 512 (a 128 KB slice, 16 units, ALIGNED, no projection): with
# the gate barrier and 4 K chunks spill-free on sm_80 and sm_90 (triton 3.9; 252-255
# registers, 160 KB of shared memory) with lengths or resets and every gate option; 8 and 16
# chunks spilled 8-72 B, and lengths with resets 16-24 B with 4, 8 or 16 (so those keep the
# streamed plan). Without the barrier: 184-296 B.
WIDE_FP32_TILED_BACKWARD_BLOCK_H = 512
WIDE_FP32_TILED_BACKWARD_K_CHUNKS = 4
# K-split backward (K_SPLIT = 2): where an fp32 16-unit slice overflows shared memory (H = 768
# / 1024: 4 BLOCK_H x 16 x 4 B = 256 KB), two programs share the entries, each holding W_hh's
# rows of half the units of every gate (128 KB) and adding the pair's halves of dh_{t-1} after
# a second barrier. With a CTA barrier after each of its four 512-wide dots and 4 K chunks,
# sm_80 / sm_90, triton 3.9, H = 768 and 1024, ALIGNED, every gate option with lengths and
# resets, 160 KB of shared memory, 0 spills: per-tile 218 registers at most, tiled (B > 16,
# one barrier group of all rows) 254-255. The tiled one spilled 16-92 B on sm_90 while each
# program held two gates (four blocks of their own offsets and masks, whose hoisted addresses
# the compiler kept in registers); halves of the units leave one offset and one mask. Not
# compiled on older releases, with a projection or with IEEE fp32 dots.
K_SPLIT_BACKWARD = 2
# Streamed split (W_STREAMED): where no resident grid fits (fp32 bidirectional H = 1024: 32 MB),
# each program of a tiled plan re-reads only its own W_hh slice from L2 every sub-tile, BLOCK_K
# rows at a time, spread over every SM; the cost model charges those bytes per sub-tile.
STREAMED_BLOCK_K = 64
# The streamed compile report (sm_80 and sm_90; B 1-256, H 256-1024, bf16 and fp32, every gate
# option, lengths, projections, one and two directions: 1674 plans) has 289 spilling: every
# 64-unit forward with a projection, and backwards from 255 registers: most in fp32 (TF32 or
# not) and with a projection, and every 64-unit one. The compile matrix then found forwards
# with a projection at BLOCK_P = 1024 (P = H - 1) spilling too, and on sm_86 / sm_89 some over
# the 99 KB of shared memory. Spill-free and within shared memory: without a projection,
# forwards of up to 32 units and 16-bit backwards of up to 32 units (fp32 ones too, in 16-row
# chunks: below); those are the streamed plans kernel="auto" weighs (by the cost model, against
# every resident plan); the rest stay behind streamed=True.
STREAMED_AUTO_MAX_UNITS = 32
# Streamed backwards in fp32 (triton 3.9; H = 512-1024, 16 and 32 units, every gate option,
# lengths, resets) took 255 registers with 64-row chunks and spilled 32-72 bytes (sm_90), with
# 32-row chunks 8 bytes with lengths and resets; 16 warps (128 registers each) spilled 8-56
# bytes with resets at 32-row chunks, up to 556 at 16. With 8 warps and 16-row chunks none of
# the 122 with resets spills (sm_80 / sm_86 / sm_89 / sm_90). So they take 16-row chunks, and
# kernel="auto" weighs them: the only plan that spreads an fp32 W_hh of H >= 768 over the SMs
# (its resident backward slice overflows shared memory).
STREAMED_FP32_BACKWARD_BLOCK_K = 16
# Lengths and resets together (every gate option, compile matrix, triton 3.9, sm_80 / sm_90):
# per-tile forwards with a projection spilled 24-360 bytes with 4 warps (8 units at H = 128,
# 16 at H = 64) and with 8 units at H = 256 (44-164 bytes); tiled backwards at BLOCK_H = 256
# and 512 (16 units) 56-72 bytes. So there a projection's forward takes 8 warps and >= 16
# units, and the tiled backward keeps BLOCK_H <= 128 (wider ones use the per-tile backward).
RESETS_LENGTHS_PROJ_MIN_UNITS = 16
RESETS_LENGTHS_TILED_BACKWARD_MAX_BLOCK_H = 128
# Before triton 3.8 (3.6.0, the same plans) per-tile backwards at BLOCK_H = 256 spilled 8 bytes,
# tiled ones at BLOCK_H = 64 8-24 (sm_80), and a forward's aligned 64 KB slice 16 (sm_80): with
# lengths and resets together those releases keep backwards at BLOCK_H <= 128 and per-tile
# only, and forward slices within 32 KB.
OLD_TRITON_RESETS_LENGTHS_BACKWARD_MAX_BLOCK_H = 128
# Register allocation differs across triton releases (DeviceLimits.triton). Triton 3.6 (the lent
# GPU machine's) spilled at 182 of 11752 plans of 3.9's limits, mostly backwards at their units'
# widest BLOCK_H (16 units: 512, 32: 256, 64: 128); at half those widths 38 still did: every 32-
# and 64-unit backward on sm_86 / sm_89, tiled 16-unit ones at 256 on sm_90. So before 3.8 a
# backward has 16 units, BLOCK_H <= 256 per tile and <= 128 tiled. (3.7.1 spilled at the same
# widest backwards in an earlier matrix run: 40-768 bytes.)
OLD_TRITON_BACKWARD_MAX_BLOCK_H = {16: 256, 32: 0, 64: 0}
OLD_TRITON_TILED_BACKWARD_MAX_BLOCK_H = {16: 128, 32: 0, 64: 0}
# and tiled 8-unit forwards with a projection (PROJ_UNITS 16) spilled 120 bytes on sm_80 at H = 256
OLD_TRITON_TILED_PROJ_MIN_UNITS = 16
# and on sm_86 / sm_89 with lengths and resets, streamed 32-unit backwards spilled 16 B (3.9: none)
OLD_TRITON_SM86_STREAMED_BACKWARD_MAX_UNITS = 16
# and there 4-warp fp32 forwards of 32 units: 255 registers, with peepholes and a cell clip 24 B
# spilled (sm_89, H = 32, 16 batch tiles); with 8 warps 208 registers
OLD_TRITON_SM86_FP32_4_WARP_UNITS = 16
# and on triton 3.9 too, since W_hh loads as vectors: a 4-warp fp32 forward of 16 units at H = 24
# with lengths, resets and every gate option, 255 registers and 16 B spilled (sm_86 / sm_89); 8
# warps: 164 registers
SM86_FP32_RESETS_LENGTHS_8_WARP_UNITS = 16
# Triton 3.7.1 alone: a 16-bit 32-unit forward at H = 256 (64 KB, sm_90) spilled 28 B; 16 warps: 112 registers
TRITON_3_7_SIXTEEN_WARPS_SLICE_BYTES = 64 * 1024
# (its 128 KB slices, fp32 H = 256, took 128 registers and spilled 8 B with 16 warps: those keep 8)
# and a tiled fp32 forward of 64 units with a projection (80 KB of slices, resets, no lengths)
# spilled 96 B on sm_80: on 3.7 tiled forwards with a projection keep to RESIDENT_SLICE_MAX_BYTES
# (this rule's first form capped only those with lengths, already within it; the whole 3.7.1
# split matrix found the plan still planned)


# IEEE fp32 dots (torch.backends.cudnn.allow_tf32 off) run on the FMA units, not the tensor
# cores: Triton's FMA lowering holds far more of both operands per thread, so the limits above
# (read off TF32 plans) do not hold. Compiling every fp32 plan of the matrix with TF32 off
# (triton 3.9, sm_80 / sm_86 / sm_89 / sm_90: 1550 plans) found 430 spilling, and 13 crashing
# LLVM's SLP vectorizer (sm_86 / sm_89 / sm_90; triton 3.6 and 3.7.1 compile the same plans).
# Spill-free there: resident forwards of 8 units (N = 32) at every BLOCK_P up to 1024, with 8
# warps from BLOCK_P = 128 (4 warps spilled 588-1124 B), or from BLOCK_H = 128 with a projection
# (H = 128, P = 64, lengths: 16 B on sm_90 with 4), and tiled ones with 8 at every BLOCK_P
# since they add xw after the dot (H = 64 on 4 warps: 248-255 registers, four of them spilled
# 28-60 B on sm_90; on 8: 108-134, 0 spills); 16 units and more spilled 464-12112 B
# from BLOCK_P = 128 (48 B at 64). Backwards of 16 units with 8 warps (4 spilled 16-56 B at
# BLOCK_H 32 and 64; 32 and 64 units 16-464 B), per tile at every BLOCK_H up to 512, tiled up
# to 64 without a projection (128 spilled 8-60 B on sm_90, 256 with lengths 80 B on sm_86 /
# sm_89, 512 8 B on sm_90, 64 with a projection 16 B). K-split backwards spilled 32-72 B on
# sm_90 (k_split_backward excludes them); streamed backwards of 32 units with lengths and
# resets 8-20 B; streamed forwards of 8-32 units and streamed backwards of 16 were all clean. The batch-tiled kernels: see batch.py, IEEE_RESIDENT_W_MAX_BYTES.
IEEE_FORWARD_UNITS = 8
IEEE_EIGHT_WARPS_BLOCK_P = 128
IEEE_BACKWARD_UNITS = 16
IEEE_TILED_BACKWARD_MAX_BLOCK_H = 64
# Before triton 3.8 (3.6.0, the same plans) the FMA dot holds its whole K per thread: every
# resident forward with BLOCK_P >= 128 spilled (8 units: 736-15656 B), as did a backward's dm
# dot over BLOCK_P = 128 (24 B, sm_90); at 64 none did. Wider layers there stream W_hh.
IEEE_OLD_TRITON_MAX_BLOCK_P = 64


def ieee_fp32_plan(plan: Plan, limits: DeviceLimits) -> bool:
    """planning.ieee_fp32 of a plan: fp32 weights, ieee dots, a GPU target."""
    return dict(plan.signature)["w_hh_ptr"] == "*fp32" and plan.constexpr("INPUT_PRECISION") == "ieee" and \
        not limits.interpreted


def resident_slice_bytes(plan: Plan) -> int:
    """Bytes of weights a program keeps on chip. Forward: W_hh [BLOCK_P, 4 UNITS], and with a
    projection W_hr [BLOCK_H, PROJ_UNITS]; backward: W_hh [4 BLOCK_H, PROJ_UNITS], and with a
    projection W_hr [BLOCK_P, UNITS] (without one BLOCK_P = BLOCK_H and PROJ_UNITS = UNITS)."""
    c = dict(plan.constexprs)
    element = 4 if c["DOT_IN_FP32"] else ELEMENT_BYTES[dict(plan.signature)["w_hh_ptr"].lstrip("*")]
    w_hh = 0 if c.get("W_STREAMED") else 1  # a streamed plan keeps only W_hr's slice
    if plan.kernel.startswith("lstm_fwd"):
        elements = w_hh * 4 * plan.forward_k_rows * c["UNITS"] + (c["BLOCK_H"] * c["PROJ_UNITS"] if c["HAS_PROJ"] else 0)
    else:  # a K-split program holds its half of the units of every gate
        elements = (w_hh * 4 * c["BLOCK_H"] * c["PROJ_UNITS"] // plan.k_split
                    + (c["BLOCK_P"] * c["UNITS"] if c["HAS_PROJ"] else 0))
    return elements * element


def budgeted_slice_bytes(plan: Plan) -> int:
    # fp64 is the verification dtype (gradcheck, 1e-10 tests): its plans take fp32's tiles, so every
    # shape verified in fp32 is verified in fp64 too (on a GPU its largest slices exceed shared memory).
    return resident_slice_bytes(plan) // 2 if plan.constexpr("ACC_DTYPE") == "fp64" else resident_slice_bytes(plan)


def warps_for(plan: Plan, limits: DeviceLimits) -> int:
    if dict(plan.constexprs).get("W_STREAMED"):
        return 8  # its slice streams through registers every sub-tile: 4 warps spilled 8-1644 bytes
    if ieee_fp32_plan(plan, limits) and (plan.kernel.startswith("lstm_bwd") or plan.kernel.endswith("_tiled") or max(
            plan.constexpr("BLOCK_P"), plan.constexpr("BLOCK_H") if plan.constexpr("HAS_PROJ") else 0)
            >= IEEE_EIGHT_WARPS_BLOCK_P):
        return 8  # (a forward's projection dot runs over K = BLOCK_H)
    if plan.constexpr("HAS_PROJ") and plan.constexpr("UNITS") > FOUR_WARPS_PROJ_MAX_UNITS:
        return 8
    if plan.constexpr("HAS_PROJ") and plan.constexpr("HAS_LENGTHS") and plan.constexpr("HAS_RESETS"):
        return 8  # see RESETS_LENGTHS_PROJ_MIN_UNITS
    if limits.small_sms and plan.kernel.startswith("lstm_fwd") and dict(plan.signature)["w_hh_ptr"] == "*fp32":
        if limits.old_triton and plan.constexpr("UNITS") > OLD_TRITON_SM86_FP32_4_WARP_UNITS:
            return 8
        if plan.constexpr("HAS_LENGTHS") and plan.constexpr("HAS_RESETS") and \
                plan.constexpr("UNITS") >= SM86_FP32_RESETS_LENGTHS_8_WARP_UNITS:
            return 8
    if limits.triton == (3, 7) and plan.kernel == "lstm_fwd_kernel_split" and plan.constexpr("UNITS") == 32 and \
            resident_slice_bytes(plan) == TRITON_3_7_SIXTEEN_WARPS_SLICE_BYTES:
        return 16
    return 4 if resident_slice_bytes(plan) <= FOUR_WARPS_SLICE_BYTES else 8

def both_lengths_and_resets(options: GateOptions) -> bool:
    return options.lengths and options.resets


def old_triton_with_lengths_and_resets(options: GateOptions, limits: DeviceLimits) -> bool:
    return both_lengths_and_resets(options) and limits.old_triton


def wide_tiled_backward(units: int, block_h: int, name: str, P: int | None, H: int, options: GateOptions,
                        limits: DeviceLimits) -> bool:
    """A tiled backward with a 128 KB slice where the compile matrix has it spill-free: 16-bit at
    WIDE_TILED_BACKWARD_BLOCK_H, fp32 (and fp64, which takes fp32's tiles) at
    WIDE_FP32_TILED_BACKWARD_BLOCK_H without lengths and resets together."""
    if ELEMENT_BYTES[name] == 2:
        wide = block_h == WIDE_TILED_BACKWARD_BLOCK_H
    else:
        wide = block_h == WIDE_FP32_TILED_BACKWARD_BLOCK_H and not both_lengths_and_resets(options)
    return (wide and units == 16 and (P is None or P == H) and H % 16 == 0 and not limits.old_triton
            and not limits.small_sms)


def k_split_backward(units: int, block_h: int, name: str, P: int | None, H: int, limits: DeviceLimits,
                     allow_tf32: bool = True) -> bool:
    """A backward (per-tile or tiled) that may split its slice over a pair of programs (K_SPLIT_BACKWARD):
    fp32 (and fp64, which takes fp32's tiles) where the compile matrix has it spill-free (not
    with IEEE fp32 dots: see IEEE_*)."""
    return (ELEMENT_BYTES[name] > 2 and units == 16 and block_h == ALIGNED_BACKWARD_MAX_BLOCK_H[16]
            and (P is None or P == H) and H % 16 == 0 and not limits.old_triton and not limits.small_sms
            and not ieee_fp32(name, allow_tf32, limits))


def release_block_h(table: dict, old_table: dict, units: int, limits: DeviceLimits) -> int:
    """A backward's widest BLOCK_H for `units`: from `table` (read off triton 3.9), or from
    `old_table` on older releases (limits.old_triton); 0: no such plan."""
    return (old_table if limits.old_triton else table)[units]


def shared_slice_limit(limits: DeviceLimits) -> int:
    """The largest slice a program may hold: its step's tiles take shared memory too, about
    1.25x the slice in all (compile matrix)."""
    return limits.max_shared_bytes * 4 // 5


# Besides its slice, a program stages one operand of its step's dots in shared memory: BLOCK_B
# rows of h, m or dpre (K = BLOCK_P or BLOCK_H wide). At 128 KB slices that is what decides
# sm_80 (163 KB). Triton 3.9 took exactly slice + staged operand (16-bit H = 1024: 160 KB),
# except forwards with resets, 4 KB more; 3.6 took those 4 KB in every forward (compile
# matrix). The tiled forward adds xw after its dot for that reason: as the dot's accumulator,
# xw was converted to the accumulator layout while the staged h rows were live, 4 KB more in
# fp32 (164 KB at H = 512, two directions, over sm_80's limit; 160 KB now). Since then every
# resident tiled forward took exactly slice + staged rows on 3.9, resets included, but for
# 20 KB ones of 32 units on sm_89 (2 KB more): the 4 KB are charged to per-tile ones only.
EXTRA_SHARED_BYTES = 4 * 1024


def fits_shared_memory(plan: Plan, limits: DeviceLimits) -> bool:
    """The plan's slice and its staged dot operand within the target's shared memory (the
    interpreter has none to fit)."""
    if limits.interpreted:
        return True
    c = dict(plan.constexprs)
    element = ELEMENT_BYTES[dict(plan.signature)["w_hh_ptr"].lstrip("*")]
    forward = plan.kernel.startswith("lstm_fwd")
    proj_k = c["BLOCK_H"] if forward else c["BLOCK_P"]  # K of the projection's dot (m, or dh rows)
    # the W_hh dot's K: h's entries (two K tiles stage one at a time: the first, BLOCK_P / 2), or
    # one of a backward's 4 K blocks of dpre (a K-split one's half)
    k_width = (c["BLOCK_P"] // 2 if c.get("K_TAIL") else c["BLOCK_P"]) if forward else c["BLOCK_H"] // plan.k_split
    staged = c["BLOCK_B"] * max(proj_k if c["HAS_PROJ"] else 0, k_width) * element
    extra = forward and (limits.old_triton or c["HAS_RESETS"] and not plan.kernel.endswith("_tiled"))
    extra = EXTRA_SHARED_BYTES if extra else 0
    return resident_slice_bytes(plan) + staged + extra <= limits.max_shared_bytes


# A resident tiled forward with P at most 3/4 of BLOCK_P (P = 768) may hold its slice as two K
# tiles, BLOCK_P / 2 rows and then K_TAIL = BLOCK_P / 4, instead of BLOCK_P padded rows: fp32
# at H = 768 on 8 units then compiled to 128 KB on sm_80 (163 KB; the 96 KB slice and one
# tile's staged h rows, 32 KB), not 128 KB + 64 KB; 140-242 registers, 0 spills, except fp32
# with lengths and resets in TF32: 255 and 16 B spilled. The planner takes it only where the
# padded slice does not fit, its slice budget or shared memory: also 16-bit H = 768 on sm_80
# before triton 3.8 (4 KB more there), and 64-unit 16-bit forwards with a projection of
# P <= 192 at H = 1024 (BLOCK_P = 256, over the 128 KB budget padded), sm_80 and sm_90.
def forward_k_tail(P: int, block_p: int, name: str, options: GateOptions) -> int:
    """K_TAIL for a forward over P entries of h, or 0 (one K tile): the tail's dot needs K >= 16."""
    tail = block_p // 4
    if ELEMENT_BYTES[name] == 4 and both_lengths_and_resets(options):
        return 0
    return tail if 4 * P <= 3 * block_p and tail >= MIN_DOT else 0


def auto_streamed_units(direction: str, unit_choices, name: str, P: int | None, H: int) -> list[int]:
    """The units per program of the streamed plans kernel="auto" may run: the spill-free part of
    the streamed compile report (STREAMED_AUTO_MAX_UNITS); none with a projection."""
    if P is not None and P != H:
        return []
    return [u for u in unit_choices if u <= STREAMED_AUTO_MAX_UNITS]


def streamed_block_k(direction: str, name: str) -> int:
    """Rows of the W_hh slice a streamed plan reads per chunk (STREAMED_FP32_BACKWARD_BLOCK_K)."""
    return STREAMED_FP32_BACKWARD_BLOCK_K if direction == "backward" and ELEMENT_BYTES[name] > 2 else STREAMED_BLOCK_K
