"""Planning's shared vocabulary: device limits, the one Plan type, the options that change
kernel code, and the Variant protocol every kernel variant implements.

A plan is a pure function of (shapes, dtype, gate options, device limits, dispatch choice,
TF32 setting). The launcher runs plans; the compile matrix and perf/ compile the very same
plans for sm_80 and sm_90 without a GPU, so what runs and what is checked cannot drift
apart. Nothing here imports triton or touches a device, and nothing here knows a variant:
each variant's planning lives in its own host file (batch.py, split.py, cell.py), and
variants.py lists them and makes the one `kernel="auto"` decision.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import itertools
import re
import struct
from typing import Callable, NamedTuple

import torch

KERNEL_CHOICES = ("auto", "batch", "batch_streamed", "split", "split_tiled")

_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}
ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp64": 8}
MIN_DOT = 16  # every tl.dot dimension must be >= 16 for the compiler (triton <= 3.7.1)


@functools.lru_cache(maxsize=None)
def installed_triton() -> tuple[int, int]:
    """(major, minor) of the installed triton, read without importing it. Register allocation
    differs across releases (the same plan spills on 3.6 or 3.7 and not on 3.9), so the limits
    that keep plans spill-free are per release, and the compile matrix checks the installed one."""
    for distribution in ("triton", "pytorch-triton"):  # the latter: torch's nightly builds
        try:
            major, minor = re.match(r"(\d+)\.(\d+)", importlib.metadata.version(distribution)).groups()
            return int(major), int(minor)
        except importlib.metadata.PackageNotFoundError:
            continue
    return (0, 0)


# Register allocation differs across triton releases (DeviceLimits.triton): where a release
# before this one spills at a plan that later ones compile cleanly, the planners keep a
# narrower plan for it (split_planning.py, batch.py say which and why).
OLDEST_FULL_LIMITS_TRITON = (3, 8)


@dataclasses.dataclass(frozen=True)
class DeviceLimits:
    """What planning needs to know about the device and the compiler that builds for it.
    `interpreted` selects the CPU interpreter."""

    name: str
    capability: int | None
    num_sms: int
    max_shared_bytes: int  # per program (opt-in maximum)
    registers_per_sm: int = 65536
    max_registers_per_thread: int = 255
    max_threads_per_sm: int = 2048
    interpreted: bool = False
    triton: tuple[int, int] = dataclasses.field(default_factory=installed_triton)

    @property
    def small_sms(self) -> bool:
        """sm_86 / sm_89: 1536 threads and 99 KB of shared memory per SM. Some plans that compile
        spill-free for sm_80 / sm_90 spill there; the planners keep narrower ones."""
        return self.max_threads_per_sm < 2048

    @property
    def old_triton(self) -> bool:
        """A triton release before OLDEST_FULL_LIMITS_TRITON: see the planners' OLD_TRITON_ rules."""
        return self.triton < OLDEST_FULL_LIMITS_TRITON

    @classmethod
    def sm80(cls) -> "DeviceLimits":
        return cls("sm_80 (A100)", 80, 108, 166912)

    @classmethod
    def sm86(cls) -> "DeviceLimits":
        # Ampere workstation/inference parts (RTX 30, A10, A40): 99 KB of shared memory per
        # block and 1536 threads per SM; the A10's 72 SMs bound what must be co-resident.
        return cls("sm_86 (A10)", 86, 72, 101376, max_threads_per_sm=1536)

    @classmethod
    def sm89(cls) -> "DeviceLimits":
        # Ada (RTX 40, L4, L40S): the same per-SM budgets as sm_86; the L4's 58 SMs.
        return cls("sm_89 (L4)", 89, 58, 101376, max_threads_per_sm=1536)

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
                   getattr(props, "regs_per_multiprocessor", 65536),
                   max_threads_per_sm=getattr(props, "max_threads_per_multi_processor", 2048))



# The GPU targets the planner and the compile matrix know, by compute capability.
TARGET_LIMITS = {80: DeviceLimits.sm80, 86: DeviceLimits.sm86, 89: DeviceLimits.sm89, 90: DeviceLimits.sm90}

@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything needed to launch (or compile) one kernel, and nothing else."""

    kernel: str  # name of the @triton.jit function in triton_lstm.kernels
    variant: str  # "batch_resident" | "batch_streamed" | "split" | "cell": see Variant.plan_variants
    grid: tuple[int, ...]
    num_warps: int
    num_stages: int
    maxnreg: int  # register cap handed to ptxas, so it never trades occupancy for spills
    signature: tuple[tuple[str, str], ...]  # runtime arguments in order, with triton types
    constexprs: tuple[tuple[str, object], ...]  # dtypes as names ("fp32")

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.signature)

    @property
    def programs(self) -> int:
        n = 1
        for g in self.grid:
            n *= g
        return n

    def constexpr(self, name: str):
        return dict(self.constexprs)[name]

    @property
    def k_split(self) -> int:
        """Programs that share one weight slice: 2 in a K-split split backward, else 1."""
        return dict(self.constexprs).get("K_SPLIT", 1)

    @property
    def forward_k_rows(self) -> int:
        """K of a split forward's W_hh dot, the slice rows it holds per gate column: BLOCK_P, or
        BLOCK_P / 2 + K_TAIL where a tiled forward holds them as two K tiles (kernels/lstm_split.py)."""
        c = dict(self.constexprs)
        return c["BLOCK_P"] // 2 + c["K_TAIL"] if c.get("K_TAIL") else c["BLOCK_P"]

    def describe(self) -> str:
        c = dict(self.constexprs)
        tiles = " ".join(f"{k}={c[k]}" for k in ("BLOCK_B", "BLOCK_N", "BLOCK_K", "BLOCK_P", "BLOCK_H", "UNITS",
                                                 "PROJ_UNITS", "ROWS_PER_GROUP") if k in c)
        if self.k_split > 1:  # the grid alone does not say two programs share each slice
            tiles += f" K_SPLIT={self.k_split}"
        if c.get("K_TAIL"):
            tiles += f" K_TAIL={c['K_TAIL']}"
        return (f"{self.kernel}[{self.variant}] grid={self.grid} warps={self.num_warps} "
                f"stages={self.num_stages} maxnreg={self.maxnreg} {tiles} dot={c.get('INPUT_PRECISION')}")


@dataclasses.dataclass(frozen=True)
class GateOptions:
    """The options that change a kernel's code (constexpr flags), and nothing else: which
    kernel runs is a dispatch choice (`kernel=`), TF32 a device setting, both kept apart.
    A projection is a flag too, but one the shapes carry (P != H)."""

    peephole: bool = False
    cell_clip: bool = False
    grad_clip: bool = False
    store_state: bool = True  # forward only: save gates and c for the backward
    lengths: bool = False  # rows carry their own lengths (variable-length input)
    resets: bool = False  # rows restart from a zero state where a new segment begins
    bias: bool = True  # LSTMCell only: the fused step adds b_ih + b_hh itself


class LayerShape(NamedTuple):
    """One recurrent launch: batch B, hidden size H, h of size P (proj_size, or H), D
    directions in one grid, input dtype."""

    B: int
    H: int
    P: int
    directions: int
    dtype: torch.dtype


@dataclasses.dataclass(frozen=True)
class MatrixGrid:
    """The shapes and options the compile matrix plans over (compile_check.FULL_GRID)."""

    Bs: tuple[int, ...]
    Hs: tuple[int, ...]
    dtypes: tuple[torch.dtype, ...]
    options: tuple[GateOptions, ...]  # with and without each gate flag
    proj_options: tuple[GateOptions, ...]  # the subset also planned with a projection
    split_Hs: tuple[int, ...] = ()  # extra H for the split variant only
    # fp32 is planned for each: TF32 dots (cudnn.allow_tf32, torch's default) and ieee ones,
    # which run on FMA units with other register needs, so other tiles
    fp32_allow_tf32: tuple[bool, ...] = (True,)

    @staticmethod
    def proj_size_for(H: int) -> int:
        return max(7, H // 4)


@dataclasses.dataclass(frozen=True)
class Variant:
    """A kernel variant as a plug-in: its host file builds one and variants.py lists it.

    plan(pass_, shape, gates, limits, choice, allow_tf32) -> Plan | None: pass_ is
        "forward" or "backward"; choice is the user's `kernel=` value ("auto" when the
        dispatcher asks); None when the variant has no plan for the shape.
    buffers(plan, call, **controls) -> dict: the launch arguments only this variant has
        (scratch, exchange and sync buffers, spin limits), given the call's tensors and the
        outputs the launcher allocated (`call`); it also checks a hand-made plan fits.
    after_launch(plan, args, **controls): what to do once the kernel is queued.
    launch_options(plan, kernel, kwargs, **controls) -> dict: extra JIT keywords for the launch
        (split: a cooperative grid on a GPU), after any check that must precede it (split:
        the binary's co-residency); kwargs are the launch's keywords so far.
    matrix(limits, grid) -> list[Plan]: every plan of this variant the dispatcher can make.
    grid_synchronised: the interpreter can run it only under a concurrent executor.
    """

    name: str
    plan_variants: tuple[str, ...]  # the Plan.variant values this variant's plans carry
    kernels: tuple[tuple[str, str], ...]  # (kernel function, module in triton_lstm.kernels)
    choices: tuple[str, ...]  # the `kernel=` values that force this variant
    plan: Callable
    matrix: Callable
    buffers: Callable = lambda plan, args, **controls: {}  # default: no buffers of its own
    after_launch: Callable = lambda plan, args, **controls: None  # default: nothing to check
    launch_options: Callable = lambda plan, kernel, kwargs, **controls: {}  # default: a plain launch
    grid_synchronised: bool = False  # its programs wait for each other: all must run at once

    @staticmethod
    def shapes(grid: "MatrixGrid"):
        """(B, H, dtype, allow_tf32) over a matrix grid, in the order every variant's matrix
        walks it; allow_tf32 varies for fp32 only (other dtypes ignore it)."""
        for B, H, dtype in itertools.product(grid.Bs, grid.Hs, grid.dtypes):
            for allow_tf32 in grid.fp32_allow_tf32 if dtype == torch.float32 else (True,):
                yield B, H, dtype, allow_tf32


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


class Numerics(NamedTuple):
    acc: str  # accumulator and saved-state dtype name
    dot_in_fp32: bool  # the interpreter's 16-bit upcast (DESIGN.md section 4)
    precision: str  # input_precision of fp32 dots


def numerics(dtype: str, allow_tf32: bool, limits: DeviceLimits) -> Numerics:
    """The numeric constexprs of a plan for input dtype name `dtype`."""
    acc = "fp64" if dtype == "fp64" else "fp32"
    dot_in_fp32 = limits.interpreted and dtype in ("bf16", "fp16")
    # fp64 and 16-bit operands ignore the flag; the interpreter always computes in full fp32.
    precision = "tf32" if dtype == "fp32" and allow_tf32 and not limits.interpreted else "ieee"
    return Numerics(acc, dot_in_fp32, precision)


def ieee_fp32(dtype: str, allow_tf32: bool, limits: DeviceLimits) -> bool:
    """An fp32 layer (input dtype name `dtype`) whose dots compile as IEEE FMA dots on a GPU,
    whose register needs differ from TF32's (split_limits, IEEE_*; batch.IEEE_RESIDENT_W_MAX_BYTES); the
    interpreter computes in full fp32 whatever the flag, and has no registers to spill."""
    return dtype == "fp32" and not allow_tf32 and not limits.interpreted


def clip_type(acc: str) -> str:
    """The triton type of a plan's clip arguments (cell_clip, grad_clip) for compute dtype `acc`:
    a Python float reaches a kernel as fp32, so fp64 plans take the float64's bit pattern as
    an int64 (kernels/helpers.clip_bound turns it back, exactly); the others an fp32."""
    return "i64" if acc == "fp64" else "fp32"


def clip_argument(value: float | None, triton_type: str):
    """What a launch passes for a clip value (None: a placeholder the kernel does not read)
    to a clip argument of `triton_type` (clip_type's answer)."""
    value = 1.0 if value is None else float(value)
    if triton_type == "i64":
        return struct.unpack("<q", struct.pack("<d", value))[0]
    return value


def occupancy(limits: DeviceLimits, registers: int, shared: int, num_warps: int) -> int:
    """Programs per SM of a kernel using `registers` per thread and `shared` bytes per program."""
    threads = 32 * num_warps
    by_regs = limits.registers_per_sm // max(1, registers * threads)
    by_shared = (limits.max_shared_bytes // shared) if shared else 32
    by_threads = limits.max_threads_per_sm // threads
    return max(0, min(by_regs, by_shared, by_threads, 32))


def maxnreg(num_warps: int, limits: DeviceLimits) -> int:
    """The register cap that keeps a program of `num_warps` warps within one SM's file."""
    return min(limits.max_registers_per_thread, limits.registers_per_sm // (32 * num_warps))
