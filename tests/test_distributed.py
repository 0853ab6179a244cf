"""Distributed training: triton_lstm.LSTM under DistributedDataParallel (and FSDP's fully_shard
where torch runs it on CPU with gloo) trains exactly as one process on the whole batch.

Two processes on CPU with the gloo backend, the kernels in Triton's interpreter (importing
conftest in each process sets TRITON_INTERPRET before triton is imported). float64, so
"exactly" means rel < 1e-10.
"""
import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import triton_lstm
from conftest import ON_GPU, assert_close

I, H, T, B, STEPS, LR = 3, 6, 5, 4, 2, 0.5
WRAPPERS = ("ddp", "fsdp")  # DistributedDataParallel, torch.distributed.fsdp.fully_shard


def make_model():
    return triton_lstm.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64)


def data(seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(T, B, I, generator=g, dtype=torch.float64),
             torch.randn(T, B, 2 * H, generator=g, dtype=torch.float64)) for _ in range(STEPS)]


def loss_of(model, x, target):
    y, _ = model(x)
    return ((y - target) ** 2).mean()


def single_process(state, batches, world):
    """The whole batch in one process, the loss averaged over the shards as DDP averages gradients."""
    model = make_model()
    model.load_state_dict(state)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    rows = B // world
    for x, target in batches:
        opt.zero_grad()
        loss = sum(loss_of(model, x[:, r * rows:(r + 1) * rows], target[:, r * rows:(r + 1) * rows])
                   for r in range(world)) / world
        loss.backward()
        opt.step()
    return model.state_dict()


def train_shard(rank, world, state, batches, wrapper):
    model = make_model()
    model.load_state_dict(state)
    if wrapper == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    rows = B // world
    for x, target in batches:
        opt.zero_grad()
        loss_of(model, x[:, rank * rows:(rank + 1) * rows], target[:, rank * rows:(rank + 1) * rows]).backward()
        opt.step()
    if wrapper == "ddp":
        return model.module.state_dict()
    return {k: v.full_tensor() for k, v in model.state_dict().items()}  # gathered from the shards


def worker(rank, world, port, state, batches, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        assert triton_lstm.functional.resolve_backend("auto", torch.device("cpu")) == "triton"  # the interpreter
        for wrapper in WRAPPERS:
            result = train_shard(rank, world, state, batches, wrapper)
            if rank == 0:
                torch.save(result, os.path.join(out_dir, f"{wrapper}.pt"))
    finally:
        dist.destroy_process_group()
    # Done, results on disk: leave without finalizing the interpreter. A gloo worker thread may
    # still be destroying a finished collective's work object, whose tensors take the GIL; during
    # finalization that thread is killed inside a noexcept frame and the process aborts (SIGABRT,
    # "terminate called without an active exception", about 1 run in 10 here; a core dump's
    # backtrace: ProcessGroupGloo::runLoop -> ~AsyncAllgatherCoalescedWork -> take_gil ->
    # pthread_exit while the main thread is in Py_FinalizeEx; pytorch/pytorch#190489).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(ON_GPU, reason="the CPU/gloo case; a GPU machine runs the same code with nccl")
def test_ddp_and_fsdp_on_two_processes_train_as_one_process_on_the_whole_batch(tmp_path, seed):
    torch.manual_seed(seed)
    state = make_model().state_dict()
    batches = data(seed)
    mp.spawn(worker, args=(2, free_port(), state, batches, str(tmp_path)), nprocs=2, join=True)
    want = single_process(state, batches, 2)
    for wrapper in WRAPPERS:
        got = torch.load(tmp_path / f"{wrapper}.pt")
        assert set(got) == set(want), wrapper
        for k in want:
            assert not torch.equal(want[k], state[k]), f"{k} did not train"
            assert_close(got[k], want[k], 1e-10, f"{wrapper} {k}")
