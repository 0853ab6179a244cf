"""Shared test set-up: where kernels run, the one tolerance table, the oracles' helpers.

Without CUDA the kernels run on CPU in Triton's interpreter: TRITON_INTERPRET must be set
before triton is imported, hence at the top of this file.
"""
import dataclasses
import os
import zlib

import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pytest  # noqa: E402

from triton_lstm import device, variants  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"
# rel = ||out - ref|| / ||ref|| against the float64 reference (DESIGN.md section 4)
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 3e-2}
DTYPE_IDS = {torch.float64: "fp64", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert out.shape == ref.shape, (out.shape, ref.shape)
    if not torch.isfinite(out).all():
        return float("inf")  # NaN never passes (outputs are poisoned with NaN before launch)
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def assert_close(out, ref, tol, what=""):
    err = rel_err(out, ref)
    assert err <= tol, f"{what}: rel err {err:.3e} > {tol:.1e}"


def with_constexprs(plan, **values):
    """`plan` with these constexprs replaced: a plan made by hand for a test."""
    return dataclasses.replace(plan, constexprs=tuple((k, values.get(k, v)) for k, v in plan.constexprs))


# The default tier (`make test`) keeps one case of every property; the rest of the breadth
# is marked slow and runs in `make test-all`.
slow = pytest.mark.slow


def interpreter_only(reason: str):
    """Mark a test that only Triton's CPU interpreter can run (its launch or byte counters, its
    sequential or threaded executors); on a CUDA machine it is skipped with `reason`."""
    return pytest.mark.interpreter_only(reason=reason)


# What a CUDA machine skips wholesale, by test file, and why.
INTERPRETER_ONLY_FILES = {
    "test_compile_matrix.py": "the compile matrix stands in for a GPU (sm_80/sm_90 without one); on a GPU the JIT "
                              "compiles every launched plan for real",
}
# Split has no fp64 plan on a GPU (fp64 is the interpreter's verification dtype, and its slices
# overflow shared memory): there its fp64 cases skip and their fp32 twins join the default tier.
SPLIT_FP64_FILES = ("test_split.py",)
SPLIT_FP64_REASON = "split has no fp64 plan on a GPU; the fp32 twin of this case runs instead"


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects: fp32 twins lose their slow mark first
def pytest_collection_modifyitems(config, items):
    if not ON_GPU:
        return
    for item in items:
        name = item.path.name
        marker = item.get_closest_marker("interpreter_only")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason="interpreter only: " + marker.kwargs.get("reason", "")))
        elif name in INTERPRETER_ONLY_FILES:
            item.add_marker(pytest.mark.skip(reason="interpreter only: " + INTERPRETER_ONLY_FILES[name]))
        elif name in SPLIT_FP64_FILES and "fp64" in item.name:
            item.add_marker(pytest.mark.skip(reason=SPLIT_FP64_REASON))
        elif name in SPLIT_FP64_FILES and "fp32" in item.name:
            item.own_markers[:] = [m for m in item.own_markers if m.name != "slow"]


def fp32_once(cases, first=1):
    """(case, dtype) params: every case in fp64, the first `first` also in fp32 (the fp32 copies
    of the others re-prove the same path and are marked slow)."""
    params = []
    for i, case in enumerate(cases):
        case = case if isinstance(case, tuple) else (case,)
        params.append(pytest.param(*case, torch.float64, id=f"{_case_id(case)}-fp64"))
        params.append(pytest.param(*case, torch.float32, id=f"{_case_id(case)}-fp32", marks=() if i < first else slow))
    return params


def _case_id(case):
    return "-".join(str(c) for c in case)


@pytest.fixture
def seed(request) -> int:
    """A seed derived from the test id: fresh inputs per test, the same on every run."""
    return zlib.crc32(request.node.nodeid.encode()) % (2 ** 31)


@pytest.fixture(autouse=True)
def seeded_global_rng(seed):
    torch.manual_seed(seed)


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    monkeypatch.setattr(device, "poison_outputs", True)


@pytest.fixture(autouse=True)
def no_tf32():
    # Tests that need 1e-5 in fp32 turn TF32 off, as nn.LSTM's users would.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def random_lstm_tensors(T, B, I, H, dtype, *, seed, bias=True, hx=True, peephole=False,
                        batch_first=False, scale=None):
    """Fresh random float64 leaves for x, the weights, hx and peephole (nn.LSTM's init range)."""
    g = torch.Generator().manual_seed(seed)
    k = scale if scale is not None else H ** -0.5

    def u(*shape):
        return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * k)

    x = torch.randn(*((B, T, I) if batch_first else (T, B, I)), generator=g, dtype=torch.float64)
    tensors = dict(x=x, weight_ih=u(4 * H, I), weight_hh=u(4 * H, H),
                   bias_ih=u(4 * H) if bias else None, bias_hh=u(4 * H) if bias else None)
    if hx:
        tensors["h0"] = torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5
        tensors["c0"] = torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5
    if peephole:
        tensors["peephole"] = u(3, H)
    return tensors


def leaves(tensors, dtype, device=DEVICE):
    return {k: (v.to(device=device, dtype=dtype).requires_grad_() if v is not None else None)
            for k, v in tensors.items()}


def call(fn, t, **kwargs):
    hx = (t["h0"], t["c0"]) if "h0" in t else None
    return fn(t["x"], t["weight_ih"], t["weight_hh"], t["bias_ih"], t["bias_hh"], hx,
              peephole=t.get("peephole"), **kwargs)


def outputs_and_grads(fn, t, seed, **kwargs):
    """Run fn on leaves t, backprop random upstream grads for y, h_n and c_n at once."""
    y, (h_n, c_n) = call(fn, t, **kwargs)
    g = torch.Generator().manual_seed(seed + 1)
    upstream = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o) for o in (y, h_n, c_n)]
    names = [k for k, v in t.items() if v is not None]
    grads = torch.autograd.grad((y, h_n, c_n), [t[k] for k in names], upstream, allow_unused=True)
    return {"y": y, "h_n": h_n, "c_n": c_n, **{f"d{k}": gr for k, gr in zip(names, grads)}}


class LaunchCounter:
    """Counts Triton launches of any kernel: the interpreter's grid executor, or on a GPU
    each kernel object's run method."""

    def __init__(self, monkeypatch):
        self.count = 0
        if ON_GPU:
            for kernel in map(variants.kernel_function, variants.kernel_names()):
                original = kernel.run
                monkeypatch.setattr(kernel, "run", self._wrap(original))
        else:
            from triton.runtime import interpreter
            monkeypatch.setattr(interpreter.GridExecutor, "__call__",
                                self._wrap(interpreter.GridExecutor.__call__))

    def _wrap(self, fn):
        def counted(*args, **kwargs):
            self.count += 1
            return fn(*args, **kwargs)
        return counted


@pytest.fixture
def launch_counter(monkeypatch):
    return LaunchCounter(monkeypatch)


def torch_lstm(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, hx=None, *, peephole=None,
               batch_first=False):
    """torch.nn.LSTM as a function of the given tensors (the oracle nobody here wrote)."""
    assert peephole is None, "torch.nn.LSTM has no peepholes"
    H, I = weight_hh.shape[1], weight_ih.shape[1]
    has_bias = bias_ih is not None
    module = torch.nn.LSTM(I, H, bias=has_bias, batch_first=batch_first, device="meta")
    params = {"weight_ih_l0": weight_ih, "weight_hh_l0": weight_hh}
    if has_bias:
        params.update(bias_ih_l0=bias_ih, bias_hh_l0=bias_hh)
    hx = None if hx is None else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
    y, (h_n, c_n) = torch.func.functional_call(module, params, (x, hx))
    return y, (h_n[0], c_n[0])
