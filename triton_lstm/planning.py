"""Planning: a pure function from (shapes, dtype, options, device limits) to a launch plan.

The launcher runs plans; the compile matrix and perf/ compile the very same plans for
sm_80 and sm_90 without a GPU, so what runs and what is checked cannot drift apart.
Nothing here imports triton or touches a device.
"""
from __future__ import annotations

import dataclasses
import functools

import torch

# "split": hidden units across co-resident programs with a grid barrier (triton_lstm/split.py)
KERNEL_CHOICES = ("auto", "batch", "batch_streamed", "split")

# Dot operand dtype on a GPU, by input dtype (fp32 stays fp32: tf32 or ieee per the plan).
_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}
_ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp64": 8}

# A resident W_hh^T (four [BLOCK_H, BLOCK_H] gate blocks in the dot operand dtype) of at
# most this many bytes compiles without spills with 8 warps on sm_80 and sm_90 (bf16 at
# H=128, 128 KB, spills 600 bytes); larger W_hh is streamed. From the compile report.
RESIDENT_W_MAX_BYTES = 64 * 1024
RESIDENT_W_FOUR_WARPS_BYTES = 16 * 1024
# Streamed tiles: 32 x 32 with 8 warps and one stage is spill-free in every dtype
# (64 x 64 spills in fp64, and with 4 warps in every dtype).
STREAMED_TILE = 32
# Without an explicit cap ptxas sometimes spills a few bytes at 48-128 registers to keep
# occupancy high; a batch-tiled program has too few siblings for occupancy to matter.
MAX_REGISTERS_PER_SM = 65536
MIN_DOT = 16  # every tl.dot dimension must be >= 16 for the compiler (triton <= 3.7.1)


@dataclasses.dataclass(frozen=True)
class DeviceLimits:
    """What planning needs to know about the device. `interpreted` selects the CPU interpreter."""

    name: str
    capability: int | None
    num_sms: int
    max_shared_bytes: int  # per program (opt-in maximum)
    registers_per_sm: int = 65536
    max_registers_per_thread: int = 255
    interpreted: bool = False

    @classmethod
    def sm80(cls) -> "DeviceLimits":
        return cls("sm_80 (A100)", 80, 108, 166912)

    @classmethod
    def sm90(cls) -> "DeviceLimits":
        return cls("sm_90 (H100 SXM)", 90, 132, 232448)

    @classmethod
    def interpreter(cls) -> "DeviceLimits":
        # Plans under the interpreter use sm_80's budgets, so they are the plans a GPU runs
        # (apart from DOT_IN_FP32, the interpreter's bf16 workaround).
        return dataclasses.replace(cls.sm80(), name="triton interpreter (CPU)", interpreted=True)

    @classmethod
    @functools.lru_cache(maxsize=None)
    def of_cuda_device(cls, index: int) -> "DeviceLimits":
        props = torch.cuda.get_device_properties(index)
        shared = getattr(props, "shared_memory_per_block_optin", 0) or 49152
        return cls(props.name, props.major * 10 + props.minor, props.multi_processor_count, shared,
                   getattr(props, "regs_per_multiprocessor", 65536))


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything needed to launch (or compile) one kernel, and nothing else."""

    kernel: str  # name of the @triton.jit function in triton_lstm.kernels
    variant: str  # "batch_resident" | "batch_streamed"
    grid: tuple[int, ...]
    num_warps: int
    num_stages: int
    maxnreg: int  # register cap handed to ptxas, so it never trades occupancy for spills
    signature: tuple[tuple[str, str], ...]  # runtime arguments in order, with triton types
    constexprs: tuple[tuple[str, object], ...]  # dtypes as names ("fp32"), see kernels.launch

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.signature)

    def constexpr(self, name: str):
        return dict(self.constexprs)[name]

    def describe(self) -> str:
        c = dict(self.constexprs)
        tiles = " ".join(f"{k}={c[k]}" for k in ("BLOCK_B", "BLOCK_N", "BLOCK_K", "BLOCK_P", "BLOCK_H", "UNITS", "PROJ_UNITS") if k in c)
        return (f"{self.kernel}[{self.variant}] grid={self.grid} warps={self.num_warps} "
                f"stages={self.num_stages} maxnreg={self.maxnreg} {tiles} dot={c.get('INPUT_PRECISION')}")


@dataclasses.dataclass(frozen=True)
class Options:
    """The options that change a kernel's code."""

    peephole: bool = False
    cell_clip: bool = False
    grad_clip: bool = False
    store_state: bool = True  # forward only: save gates and c for the backward
    lengths: bool = False  # rows carry their own lengths (variable-length input)
    bias: bool = True  # LSTMCell only: the fused step adds b_ih + b_hh itself
    kernel: str = "auto"
    allow_tf32: bool = True  # fp32 dots on a GPU: tf32 (torch.backends.cudnn.allow_tf32) or ieee


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def dot_block(n: int) -> int:
    """The tile that covers n in one dot operand: a power of two, at least MIN_DOT."""
    return max(MIN_DOT, _next_pow2(n))


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise TypeError(f"unsupported dtype {dtype}; expected one of {list(_DTYPE_NAMES)}") from None


def _tiles(H: int, P: int, dtype: str, options: Options):
    """(variant, BLOCK_B, BLOCK_N, BLOCK_K, BLOCK_P, num_warps, num_stages) of the batch-tiled kernels."""
    if options.kernel not in KERNEL_CHOICES:
        raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {options.kernel!r}")
    block_b = MIN_DOT  # the smallest dot M: most programs for a given B, fewest registers
    block_h = dot_block(H)
    w_bytes = 4 * block_h * block_h * _ELEMENT_BYTES[dtype]
    # A projection is always streamed: in one resident program the dot projecting m_t would
    # consume the gate dots' results, Triton then lays every warp along the 16 batch rows of
    # such a dot chain, each warp holds whole accumulators, and ptxas spills (compile report:
    # 255 registers and 100-3000 spilled bytes at H = 24-128). Streaming sends m_t through the
    # program's scratch, which breaks the chain.
    if options.kernel != "batch_streamed" and P == H and w_bytes <= RESIDENT_W_MAX_BYTES:
        num_warps = 4 if w_bytes <= RESIDENT_W_FOUR_WARPS_BYTES else 8
        return "batch_resident", block_b, block_h, block_h, block_h, num_warps, 1
    # At most half of BLOCK_H, so a forced streamed plan on a small H still loops over tiles.
    tile = min(STREAMED_TILE, max(MIN_DOT, block_h // 2))
    return "batch_streamed", block_b, tile, tile, tile, 8, 1


def _maxnreg(num_warps: int) -> int:
    return min(255, MAX_REGISTERS_PER_SM // (32 * num_warps))


def _common_constexprs(dtype: str, options: Options, limits: DeviceLimits):
    acc = "fp64" if dtype == "fp64" else "fp32"
    dot_in_fp32 = limits.interpreted and dtype in ("bf16", "fp16")
    if dtype == "fp32" and options.allow_tf32 and not limits.interpreted:
        precision = "tf32"
    else:
        # fp64 and 16-bit operands ignore the flag; the interpreter always computes in full fp32.
        precision = "ieee"
    return acc, dot_in_fp32, precision


def _tile_constexprs(variant, block_b, block_n, block_k, block_p, P, H, options):
    return (
        ("BLOCK_B", block_b), ("BLOCK_N", block_n), ("BLOCK_K", block_k), ("BLOCK_P", block_p),
        ("W_RESIDENT", variant == "batch_resident"), ("HAS_PEEPHOLE", options.peephole),
        ("USE_CELL_CLIP", options.cell_clip),
    )


def _flag_constexprs(P, H, options):
    return (("HAS_LENGTHS", options.lengths), ("HAS_PROJ", P != H))


@functools.lru_cache(maxsize=1024)
def plan_forward(B: int, H: int, P: int, directions: int, dtype: torch.dtype, options: Options,
                 limits: DeviceLimits) -> Plan:
    """Plan the forward recurrence of one layer: batch B, hidden size H, h of size P
    (proj_size, or H), 1 or 2 directions in one grid."""
    name = dtype_name(dtype)
    variant, block_b, block_n, block_k, block_p, num_warps, num_stages = _tiles(H, P, name, options)
    acc, dot_in_fp32, precision = _common_constexprs(name, options, limits)
    p, a = f"*{name}", f"*{acc}"
    signature = (
        ("xw_ptr", p), ("w_hh_ptr", p), ("w_hr_ptr", p), ("h0_ptr", p), ("c0_ptr", p), ("peephole_ptr", p),
        ("lengths_ptr", "*i64"), ("y_ptr", p), ("h_n_ptr", p), ("c_n_ptr", p), ("gates_ptr", a),
        ("c_hist_ptr", a), ("h_scratch_ptr", a), ("c_scratch_ptr", a), ("m_scratch_ptr", a),
        ("T", "i32"), ("B", "i32"), ("H", "i32"), ("P", "i32"), ("direction0", "i32"), ("cell_clip", "fp32"),
        ("stride_xw_t", "i32"), ("stride_xw_b", "i32"),
        ("stride_w_dir", "i32"), ("stride_w_row", "i32"), ("stride_w_col", "i32"),
        ("stride_hr_dir", "i32"), ("stride_hr_row", "i32"), ("stride_hr_col", "i32"),
        ("stride_h0_dir", "i32"), ("stride_h0_b", "i32"), ("stride_c0_dir", "i32"), ("stride_c0_b", "i32"),
        ("stride_y_t", "i32"), ("stride_y_b", "i32"),
    )
    constexprs = _tile_constexprs(variant, block_b, block_n, block_k, block_p, P, H, options) + \
        _flag_constexprs(P, H, options) + (
        ("STORE_STATE", options.store_state),
        ("DOT_IN_FP32", dot_in_fp32), ("INPUT_PRECISION", precision), ("ACC_DTYPE", acc),
    )
    grid = (-(-B // block_b), directions)
    return Plan("lstm_fwd_kernel_batch", variant, grid, num_warps, num_stages, _maxnreg(num_warps),
                signature, constexprs)


@functools.lru_cache(maxsize=1024)
def plan_backward(B: int, H: int, P: int, directions: int, dtype: torch.dtype, options: Options,
                  limits: DeviceLimits) -> Plan:
    """Plan the backward recurrence; same tiles as the forward of the same shapes."""
    name = dtype_name(dtype)
    variant, block_b, block_n, block_k, block_p, num_warps, num_stages = _tiles(H, P, name, options)
    acc, dot_in_fp32, precision = _common_constexprs(name, options, limits)
    p, a = f"*{name}", f"*{acc}"
    signature = (
        ("dy_ptr", p), ("dh_n_ptr", p), ("dc_n_ptr", p), ("w_hh_ptr", p), ("w_hr_ptr", p), ("gates_ptr", a),
        ("c_hist_ptr", a), ("c0_ptr", p), ("peephole_ptr", p), ("lengths_ptr", "*i64"), ("dpre_ptr", p),
        ("dh_hist_ptr", a), ("dh0_ptr", p), ("dc0_ptr", p), ("dh_scratch_ptr", a), ("dc_scratch_ptr", a),
        ("T", "i32"), ("B", "i32"), ("H", "i32"), ("P", "i32"), ("direction0", "i32"),
        ("cell_clip", "fp32"), ("grad_clip", "fp32"),
        ("stride_dy_t", "i32"), ("stride_dy_b", "i32"),
        ("stride_w_dir", "i32"), ("stride_w_row", "i32"), ("stride_w_col", "i32"),
        ("stride_hr_dir", "i32"), ("stride_hr_row", "i32"), ("stride_hr_col", "i32"),
        ("stride_c0_dir", "i32"), ("stride_c0_b", "i32"),
    )
    constexprs = _tile_constexprs(variant, block_b, block_n, block_k, block_p, P, H, options) + (
        ("USE_GRAD_CLIP", options.grad_clip),) + _flag_constexprs(P, H, options) + (
        ("DOT_IN_FP32", dot_in_fp32), ("INPUT_PRECISION", precision), ("ACC_DTYPE", acc),
    )
    grid = (-(-B // block_b), directions)
    return Plan("lstm_bwd_kernel_batch", variant, grid, num_warps, num_stages, _maxnreg(num_warps),
                signature, constexprs)


# One LSTMCell step (kernels/lstm_cell.py): no recurrence inside a launch, so the grid also
# splits the hidden units, and both input GEMMs stream their weights in BLOCK_K tiles.
CELL_BLOCK_N = 32
CELL_BLOCK_K = 32


def _cell_block_n(H: int) -> int:
    return min(CELL_BLOCK_N, dot_block(H))


@functools.lru_cache(maxsize=1024)
def plan_cell_forward(B: int, I: int, H: int, dtype: torch.dtype, options: Options, limits: DeviceLimits) -> Plan:
    """Plan one fused LSTMCell step: x W_ih^T + h W_hh^T + b, the gates and the new state."""
    name = dtype_name(dtype)
    acc, dot_in_fp32, precision = _common_constexprs(name, options, limits)
    p, a = f"*{name}", f"*{acc}"
    signature = (
        ("x_ptr", p), ("w_ih_ptr", p), ("w_hh_ptr", p), ("b_ih_ptr", p), ("b_hh_ptr", p), ("h_ptr", p),
        ("c_ptr", p), ("peephole_ptr", p), ("h1_ptr", p), ("c1_ptr", p), ("gates_ptr", a), ("c1_acc_ptr", a),
        ("B", "i32"), ("I", "i32"), ("H", "i32"), ("cell_clip", "fp32"),
        ("stride_x_b", "i32"), ("stride_w_ih_row", "i32"), ("stride_w_hh_row", "i32"), ("stride_h_b", "i32"),
        ("stride_c_b", "i32"),
    )
    block_n = _cell_block_n(H)
    constexprs = (
        ("BLOCK_B", MIN_DOT), ("BLOCK_N", block_n), ("BLOCK_K", CELL_BLOCK_K), ("HAS_BIAS", options.bias),
        ("HAS_PEEPHOLE", options.peephole), ("USE_CELL_CLIP", options.cell_clip),
        ("STORE_STATE", options.store_state), ("DOT_IN_FP32", dot_in_fp32), ("INPUT_PRECISION", precision),
        ("ACC_DTYPE", acc),
    )
    grid = (-(-B // MIN_DOT), -(-H // block_n))
    return Plan("lstm_cell_fwd_kernel", "cell", grid, 4, 1, _maxnreg(4), signature, constexprs)


@functools.lru_cache(maxsize=1024)
def plan_cell_backward(B: int, H: int, dtype: torch.dtype, options: Options, limits: DeviceLimits) -> Plan:
    """Plan the fused gate derivative of one LSTMCell step (elementwise; GEMMs are on the host)."""
    name = dtype_name(dtype)
    acc, _, _ = _common_constexprs(name, options, limits)
    p, a = f"*{name}", f"*{acc}"
    signature = (
        ("dh1_ptr", p), ("dc1_ptr", p), ("gates_ptr", a), ("c_ptr", p), ("c1_acc_ptr", a), ("peephole_ptr", p),
        ("dpre_ptr", p), ("dc_ptr", p), ("B", "i32"), ("H", "i32"), ("cell_clip", "fp32"), ("grad_clip", "fp32"),
        ("stride_dh1_b", "i32"), ("stride_dc1_b", "i32"), ("stride_c_b", "i32"),
    )
    block_n = _cell_block_n(H)
    constexprs = (
        ("BLOCK_B", MIN_DOT), ("BLOCK_N", block_n), ("HAS_PEEPHOLE", options.peephole),
        ("USE_CELL_CLIP", options.cell_clip), ("USE_GRAD_CLIP", options.grad_clip), ("ACC_DTYPE", acc),
    )
    grid = (-(-B // MIN_DOT), -(-H // block_n))
    return Plan("lstm_cell_bwd_kernel", "cell", grid, 4, 1, _maxnreg(4), signature, constexprs)
