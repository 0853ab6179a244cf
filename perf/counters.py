"""Counters for kernels run in Triton's CPU interpreter: launches and global-memory bytes.

They wrap three interpreter entry points, none of which names a kernel argument:
  * GridExecutor.__call__            one call per launch; records the kernel's tensor
                                     arguments (by their names in the kernel's own signature)
                                     and the address range each one covers;
  * InterpreterBuilder.create_masked_load / create_masked_store
                                     every tl.load / tl.store (unmasked ones and atomic
                                     loads/stores route through these too); the bytes of the
                                     lanes whose mask is true are added to the argument whose
                                     address range holds them;
  * InterpreterBuilder.create_atomic_rmw / create_atomic_cas  counted as atomics.
So the count follows whatever signature the kernels have. It is what the kernel asks of
global memory, before any cache: a GPU serves repeated reads from L1/L2.
On CPU, the interpreter hands the kernel the tensors' own storage (no copy), so the kernel's
addresses are the tensors' data_ptr()s.
"""
from __future__ import annotations

import collections
import dataclasses
import inspect
import threading

import numpy as np

UNATTRIBUTED = "<no argument>"


@dataclasses.dataclass
class LaunchRecord:
    kernel: str
    grid: tuple
    loaded: collections.Counter  # bytes by argument name ("a|b" where arguments alias)
    stored: collections.Counter
    atomic: collections.Counter
    regions: list  # (start, end, argument names) of the launch's tensor arguments

    def _bytes_of(self, counter: collections.Counter, tensor) -> int:
        # the arguments whose address range is exactly this tensor's (generic: no argument names)
        start = tensor.data_ptr()
        end = start + _extent_bytes(tensor)
        return sum(counter[names] for s, e, names in self.regions if (s, e) == (start, end))

    def loaded_from(self, tensor) -> int:
        """Bytes this launch loaded through the argument that was `tensor`."""
        return self._bytes_of(self.loaded, tensor)

    def stored_to(self, tensor) -> int:
        """Bytes this launch stored through the argument that was `tensor`."""
        return self._bytes_of(self.stored, tensor)

    @property
    def bytes_loaded(self) -> int:
        return sum(self.loaded.values())

    @property
    def bytes_stored(self) -> int:
        return sum(self.stored.values())


def _extent_bytes(t) -> int:
    """Bytes from t.data_ptr() to one past its last element (any strides)."""
    if t.numel() == 0:
        return 0
    last = sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return (last + 1) * t.element_size()


def _regions(fn, args, kwargs) -> list[tuple[int, int, str]]:
    """(start, end, names) of each distinct address range among the tensor arguments."""
    params = inspect.signature(fn).parameters
    bound = dict(zip(params, args))
    bound.update({k: v for k, v in kwargs.items() if k in params})
    ranges = collections.defaultdict(list)
    for name, value in bound.items():
        if hasattr(value, "data_ptr") and hasattr(value, "numel") and _extent_bytes(value):
            start = value.data_ptr()
            ranges[(start, start + _extent_bytes(value))].append(name)
    return [(s, e, "|".join(names)) for (s, e), names in sorted(ranges.items())]


class InterpreterCounter:
    """Context manager counting launches and bytes of interpreted Triton kernels.

        with InterpreterCounter() as counter:
            triton_lstm.lstm(x, w_ih, w_hh)
        counter.launches[0].loaded    # Counter({'xw_ptr': ..., 'w_hh_ptr|peephole_ptr': ...})
    """

    def __init__(self):
        self.launches: list[LaunchRecord] = []
        self._lock = threading.Lock()
        self._current: LaunchRecord | None = None
        self._regions: list[tuple[int, int, str]] = []
        self._saved = []

    @property
    def bytes_loaded(self) -> int:
        return sum(r.bytes_loaded for r in self.launches)

    @property
    def bytes_stored(self) -> int:
        return sum(r.bytes_stored for r in self.launches)

    def _attribute(self, counter: collections.Counter, ptrs, mask) -> None:
        addresses = ptrs.data if mask is None else ptrs.data[np.broadcast_to(mask.data, ptrs.data.shape)]
        addresses = np.asarray(addresses, dtype=np.uint64).ravel()
        if addresses.size == 0:
            return
        element = ptrs.get_element_ty().primitive_bitwidth // 8
        with self._lock:
            remaining = np.ones(addresses.size, dtype=bool)
            for start, end, names in self._regions:
                inside = remaining & (addresses >= start) & (addresses < end)
                n = int(inside.sum())
                if n:
                    counter[names] += n * element
                    remaining &= ~inside
            left = int(remaining.sum())
            if left:
                counter[UNATTRIBUTED] += left * element

    def __enter__(self):
        from triton.runtime import interpreter

        counter = self
        builder, executor = interpreter.InterpreterBuilder, interpreter.GridExecutor
        originals = {
            (executor, "__call__"): executor.__call__,
            (builder, "create_masked_load"): builder.create_masked_load,
            (builder, "create_masked_store"): builder.create_masked_store,
        }
        for name in ("create_atomic_rmw", "create_atomic_cas"):
            if hasattr(builder, name):
                originals[(builder, name)] = getattr(builder, name)

        def launch(self_, *args, **kwargs):
            regions = _regions(self_.fn, args, kwargs)
            record = LaunchRecord(self_.fn.__name__, tuple(self_.grid) if not callable(self_.grid) else (),
                                  collections.Counter(), collections.Counter(), collections.Counter(), regions)
            with counter._lock:
                counter.launches.append(record)
                counter._current = record
                counter._regions = regions
            try:
                return originals[(executor, "__call__")](self_, *args, **kwargs)
            finally:
                counter._current = None

        # the builders' trailing arguments (cache policy, volatility, ...) differ across triton versions
        def masked_load(self_, ptrs, mask, *rest):
            if counter._current is not None:
                counter._attribute(counter._current.loaded, ptrs, mask)
            return originals[(builder, "create_masked_load")](self_, ptrs, mask, *rest)

        def masked_store(self_, ptrs, value, mask, *rest):
            if counter._current is not None:
                counter._attribute(counter._current.stored, ptrs, mask)
            return originals[(builder, "create_masked_store")](self_, ptrs, value, mask, *rest)

        def atomic_rmw(self_, op, ptr, val, mask, *rest):
            if counter._current is not None:
                counter._attribute(counter._current.atomic, ptr, mask)
            return originals[(builder, "create_atomic_rmw")](self_, op, ptr, val, mask, *rest)

        def atomic_cas(self_, ptr, cmp, val, *rest):
            if counter._current is not None:
                counter._attribute(counter._current.atomic, ptr, None)
            return originals[(builder, "create_atomic_cas")](self_, ptr, cmp, val, *rest)

        wrappers = {"__call__": launch, "create_masked_load": masked_load, "create_masked_store": masked_store,
                    "create_atomic_rmw": atomic_rmw, "create_atomic_cas": atomic_cas}
        self._saved = list(originals.items())
        for (owner, name), _ in self._saved:
            setattr(owner, name, wrappers[name])
        return self

    def __exit__(self, *exc):
        for (owner, name), original in self._saved:
            setattr(owner, name, original)
        self._saved = []
        return False
