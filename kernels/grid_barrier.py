"""A grid-wide barrier for kernels whose programs are all co-resident (the "split" variant).

The barrier itself, `grid_barrier`, is a device function in kernels/helpers.py (kernel
files import only that module); this file holds its protocol and a self-test kernel.

Legend
  sync_ptr     (2,) int32, zeroed on the launch's stream before every launch:
               sync_ptr[0] arrival counter, sync_ptr[1] error flag (1 = a barrier timed out)
  target       arrivals the barrier waits for: (k + 1) * num_programs at the k-th barrier,
               so the counter only grows and never needs a reset between barriers
  spin_limit   how many polls in a row may see no new arrival before a program gives up
               (runtime argument: the launcher sets it large on a GPU, small in the interpreter)

Recipe (the same ordering as CUDA cooperative groups' grid.sync):
  1. tl.debug_barrier(): every warp of this program has issued its stores of the step;
  2. atomic_add(counter, 1, sem="release", scope="gpu"): publish them (atom.release.gpu);
  3. poll atomic_add(counter, 0, sem="acquire", scope="gpu") (atom.acquire.gpu) until the
     counter reaches the target; readers of exchanged data use cache_modifier=".cg" so no
     stale L1 line survives (L1 is not coherent across SMs);
  4. tl.debug_barrier(): no warp reads before the polling thread has acquired.
A volatile load would not do for step 3: it carries no fence, so the data stores of other
programs could still be invisible after it sees the counter.

Bounded spin: the bound is on polls WITHOUT PROGRESS (the counter unchanged), so it detects
a stall, not slowness: a wait for many slow programs that keep arriving never times out,
while a wait for programs that cannot run (not co-resident; the sequential interpreter)
ends after spin_limit polls. Then the program sets the error flag and adds POISON (1 << 30,
in helpers.py) to the counter. Every later target is then already met, so all programs run
to the end without waiting (their outputs are garbage) and the launch returns in time
proportional to T, never hangs; the host checks the flag after the launch, on the device
(triton_lstm/barrier.py). This is what makes a forced split kernel fail fast under the sequential interpreter (program 0 waits for programs that
only start after it ends) and finish under any executor that runs programs concurrently.
The counter is int32: the launcher keeps barriers * num_programs < POISON.
"""
import triton
import triton.language as tl

from .helpers import grid_barrier, jit_kernel


@jit_kernel
def grid_barrier_selftest_kernel(
    exchange_ptr, out_ptr, sync_ptr, T, spin_limit,
    BLOCK_P: tl.constexpr,
):
    """Each step every program publishes one value, meets the others, and sums all of them.

    exchange_ptr (T, P) int32, out_ptr (T, P) int32: out[t, p] = sum_q (q + 1) * (t + 1) when
    every program saw every other program's step-t value, which only a working barrier (and
    L1-bypassing reads) guarantees.
    """
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    offs_p = tl.arange(0, BLOCK_P)  # [BLOCK_P]
    mask_p = offs_p < nprog
    for t in range(T):
        t64 = tl.cast(t, tl.int64)
        tl.store(exchange_ptr + t64 * nprog + pid, (pid + 1) * (t + 1))
        grid_barrier(sync_ptr, (t + 1) * nprog, spin_limit)
        seen = tl.load(exchange_ptr + t64 * nprog + offs_p, mask=mask_p, other=0, cache_modifier=".cg")
        tl.store(out_ptr + t64 * nprog + pid, tl.sum(seen, axis=0))
