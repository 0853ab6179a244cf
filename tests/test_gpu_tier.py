"""What `make test` runs on a CUDA machine: the hook in conftest.py skips, with a reason, what
only the interpreter can run, and moves split's fp32 twins of fp64 cases into the default tier.
Checked here on stand-in test items, since this machine has no GPU."""
import pathlib

import pytest

import conftest


class FakeItem:
    def __init__(self, file, name, marks=()):
        self.path = pathlib.Path("tests") / file
        self.name = name
        self.own_markers = list(marks)

    def get_closest_marker(self, name):
        return next((m for m in self.own_markers if m.name == name), None)

    def add_marker(self, mark):
        self.own_markers.append(mark.mark)

    def skip_reason(self):
        skips = [m for m in self.own_markers if m.name == "skip"]
        return skips[0].kwargs["reason"] if skips else None


def collected_on(on_gpu, monkeypatch):
    items = {
        "counter": FakeItem("test_perf.py", "test_counts", [conftest.interpreter_only("counts bytes").mark]),
        "matrix": FakeItem("test_compile_matrix.py", "test_corners"),
        "split64": FakeItem("test_split.py", "test_split_matches[T3-fp64]"),
        "split32": FakeItem("test_split.py", "test_split_matches[T3-fp32]", [pytest.mark.slow.mark]),
        "batch64": FakeItem("test_lstm_kernels.py", "test_kernels_match[T7-fp64-batch]"),
        "batch32": FakeItem("test_lstm_kernels.py", "test_kernels_match[T5-fp32-batch]", [pytest.mark.slow.mark]),
    }
    monkeypatch.setattr(conftest, "ON_GPU", on_gpu)
    conftest.pytest_collection_modifyitems(None, list(items.values()))
    return items


def test_on_cuda_interpreter_only_tests_skip_with_their_reason_and_split_runs_fp32(monkeypatch):
    items = collected_on(True, monkeypatch)
    assert items["counter"].skip_reason() == "interpreter only: counts bytes"
    assert "JIT compiles every launched plan for real" in items["matrix"].skip_reason()
    assert items["split64"].skip_reason() == conftest.SPLIT_FP64_REASON
    assert items["split32"].skip_reason() is None and items["split32"].get_closest_marker("slow") is None
    # the batch kernels have fp64 plans on a GPU: those cases run, their fp32 breadth stays slow
    assert items["batch64"].skip_reason() is None
    assert items["batch32"].get_closest_marker("slow") is not None


def test_without_cuda_nothing_changes(monkeypatch):
    items = collected_on(False, monkeypatch)
    assert all(item.skip_reason() is None for item in items.values())
    assert items["split32"].get_closest_marker("slow") is not None


def test_per_call_host_work_is_a_cache_lookup_and_one_direction_is_not_copied():
    import torch

    from triton_lstm import functional, variants
    from triton_lstm.planning import DeviceLimits, GateOptions, LayerShape

    shape = LayerShape(5, 1024, 1024, 1, torch.bfloat16)
    first = variants.choose("forward", shape, GateOptions(), DeviceLimits.sm90(), "auto", True)
    hits = variants.choose.cache_info().hits
    again = variants.choose("forward", shape, GateOptions(), DeviceLimits.sm90(), "auto", True)
    assert again is first and variants.choose.cache_info().hits == hits + 1
    w = torch.randn(16, 4)
    assert functional.stacked([w]).data_ptr() == w.data_ptr() and functional.stacked([w]).shape == (1, 16, 4)
    assert torch.equal(functional.stacked([w, 2 * w]), torch.stack([w, 2 * w]))
