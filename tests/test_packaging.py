"""kernels/ installs as triton_lstm.kernels, never as a top-level `kernels` module."""
import os
import pathlib
import site
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_installed_package_imports_kernels_and_no_top_level_kernels(tmp_path):
    code = ("import importlib.util; from triton_lstm import variants as v; "
            "print(importlib.util.find_spec('kernels') is None, sorted(v.kernel_function(n).fn.__name__ "
            "for n in v.kernel_names()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "True"
    assert "lstm_fwd_kernel_batch" in out.stdout


def test_wheel_maps_kernels_under_triton_lstm(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("triton_lstm-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "triton_lstm/kernels/lstm_fwd.py" in names
    assert "triton_lstm/kernels/helpers.py" in names
    assert not any(n.startswith("kernels/") for n in names)
    assert not any(n.startswith(("tests/", "perf/")) for n in names)
    # Install the wheel on its own and import from it, with no editable finder in the way
    # (-S skips .pth files; torch and triton still come from site-packages).
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    code = ("import importlib.util, triton_lstm; from triton_lstm import variants as v; "
            "print(triton_lstm.__file__, importlib.util.find_spec('kernels') is None, "
            "sorted(v.kernel_function(n).fn.__name__ for n in v.kernel_names()))")
    path = os.pathsep.join([str(target)] + site.getsitepackages())
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": path, "TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    file, no_top_level, _ = out.stdout.split(" ", 2)
    assert file.startswith(str(target)) and no_top_level == "True"
    assert "lstm_bwd_kernel_batch" in out.stdout
