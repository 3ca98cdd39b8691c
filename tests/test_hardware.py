import platform
import subprocess
import sys

import pytest

from landslide.hardware import best_precision, bf16_supported


def test_precision_follows_bf16_support():
    assert best_precision("cpu") == ("bf16-mixed" if bf16_supported("cpu") else "32-true")
    assert best_precision("mps") == "32-true"
    assert not bf16_supported("meta")


FREE_HEAP_AFTER_A_STEP = """
import ctypes, sys, torch
from landslide.hardware import tune_host_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert tune_host_allocator()
activations = torch.ones(6 << 20)  # 24 MiB, freed as a training step frees its activations
del activations
print(libc.mallinfo2().fordblks)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tuned_allocator_keeps_freed_activations_in_the_process():
    def free_heap_bytes(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", FREE_HEAP_AFTER_A_STEP, mode], capture_output=True, text=True,
                             check=True)
        return int(out.stdout.strip())

    # glibc's default maps the block and returns it to the system when freed; tuned, it stays for the next step
    assert free_heap_bytes("default") < 4 << 20
    assert free_heap_bytes("tuned") >= 24 << 20


def test_on_gpu_picks_by_the_device_a_setting_runs_on(monkeypatch):
    from landslide.hardware import device_type, on_gpu

    assert on_gpu("cpu", 512, 64) == 64 and on_gpu("mps", 512, 64) == 64
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert [device_type(a) for a in ("auto", "gpu", "cuda", "cuda:1", "cpu")] == ["cpu"] * 5
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert [device_type(a) for a in ("auto", "gpu", "cuda", "cuda:1", "cpu")] == ["cuda"] * 4 + ["cpu"]
    assert on_gpu("auto", 512, 64) == 512 and on_gpu("cpu", 512, 64) == 64
