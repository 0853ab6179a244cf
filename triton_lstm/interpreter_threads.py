"""Run the programs of each interpreted Triton launch concurrently, one thread per program.

Triton's interpreter runs a launch's programs one after another, so a kernel with a grid
barrier (kernels/grid_barrier.py) can never complete there: program 0 waits for programs
that start only after it ends. Inside `concurrent_programs()` every launch runs each
program in its own thread instead, which is what a GPU with all programs co-resident does.

What has to change for that (DESIGN.md section 5), read off triton/runtime/interpreter.py:
- the interpreter's only per-program state is `interpreter_builder.grid_idx` (read by
  tl.program_id); it becomes thread-local through a property on a subclass of the builder;
- a spinning program holds the GIL between the interpreter's bytecodes; every atomic
  yields it (time.sleep(0)) so the programs it waits for make progress;
- an exception in any program is re-raised from the launch, as the interpreter does.
Everything else (patching triton.language, copying arguments to and from the host) happens
once per launch, as in the original GridExecutor.__call__.

    from triton_lstm.interpreter_threads import concurrent_programs
    with concurrent_programs():
        kernel[grid](...)

It is what tests/ and perf/ use to run split launches on CPU; importing it imports only
triton's interpreter module (it changes nothing until the context manager is entered).
`programs_at_once(kernel)` is the one switch they share: concurrent programs for a `kernel=`
choice whose programs wait for each other, when the kernels are interpreted.
"""
from __future__ import annotations

import contextlib
import inspect
import threading
import time

from triton.runtime import interpreter


class _ThreadLocalGridIdx:
    """Data descriptor: each thread sees its own grid_idx (class attributes beat instance dicts)."""

    _local = threading.local()

    def __get__(self, obj, owner=None):
        return getattr(self._local, "grid_idx", None)

    def __set__(self, obj, value):
        self._local.grid_idx = value


def _yielding(method):
    def atomic_then_yield(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        time.sleep(0)  # let the programs a spinning one waits for run
        return result
    return atomic_then_yield


def _concurrent_call(self, *args_dev, **kwargs):
    """GridExecutor.__call__ with the grid loop replaced by one thread per program."""
    argspec = inspect.getfullargspec(self.fn)
    kwargs = {k: v for k, v in kwargs.items() if k in argspec.args or k in argspec.kwonlyargs}
    args_hst, kwargs_hst = self._init_args_hst(args_dev, kwargs)
    for hook in self.pre_run_hooks:
        hook(*args_hst, **kwargs_hst)
    patch_scope = interpreter._patch_lang(self.fn)
    try:
        args = inspect.getcallargs(self.fn, *args_hst, **kwargs_hst)
        args = {name: arg if name in self.constexprs else interpreter._implicit_cvt(arg)
                for name, arg in args.items()}
        grid = self.grid(args) if callable(self.grid) else self.grid
        grid = tuple(grid) + (1,) * (3 - len(grid))
        builder = interpreter.interpreter_builder
        builder.set_grid_dim(*grid)
        errors = []

        def run_program(x, y, z):
            try:
                builder.set_grid_idx(x, y, z)
                self.fn(**args)
            except BaseException as e:  # re-raised below, from the launching thread
                errors.append(e)

        threads = [threading.Thread(target=run_program, args=(x, y, z), daemon=True)
                   for x in range(grid[0]) for y in range(grid[1]) for z in range(grid[2])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise interpreter.InterpreterError(repr(errors[0])) from errors[0]
    finally:
        patch_scope.restore()
    self._restore_args_dev(args_dev, args_hst, kwargs, kwargs_hst)


@contextlib.contextmanager
def concurrent_programs(yield_in_atomics: bool = True):
    """Within the block, every interpreted launch runs its programs concurrently (threads).

    yield_in_atomics=False leaves the GIL to Python's own switching (every 5 ms): the
    plainest thread-per-program executor, which split kernels must also complete under.
    """
    builder = interpreter.interpreter_builder
    original_class = type(builder)
    members = {"grid_idx": _ThreadLocalGridIdx()}
    if yield_in_atomics:
        members.update(create_atomic_rmw=_yielding(original_class.create_atomic_rmw),
                       create_atomic_cas=_yielding(original_class.create_atomic_cas))
    threaded_class = type("ThreadedInterpreterBuilder", (original_class,), members)
    original_call = interpreter.GridExecutor.__call__
    builder.__class__ = threaded_class
    interpreter.GridExecutor.__call__ = _concurrent_call
    try:
        yield
    finally:
        interpreter.GridExecutor.__call__ = original_call
        builder.__class__ = original_class


def programs_at_once(kernel: str):
    """concurrent_programs() when `kernel` (a `kernel=` choice) is grid-synchronised and the
    kernels run in the interpreter; a no-op on a GPU, where its programs are co-resident, and
    for every other choice (their programs never wait for each other)."""
    from .device import kernels_interpreted
    from .variants import BARRIER_CHOICES

    if kernel in BARRIER_CHOICES and kernels_interpreted():
        return concurrent_programs()
    return contextlib.nullcontext()
