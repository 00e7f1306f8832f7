"""Placement choice from given provider / device lists, and the facts backends declare: no hardware needed."""

from pathlib import Path

import pytest

from vledge.errors import BackendUnavailableError, ConfigError
from vledge.runtimes.base import RUNTIMES, Runtime, backend
from vledge.runtimes.discovery import backend_modules
from vledge.runtimes.onnxruntime_backend import ort_providers
from vledge.runtimes.openvino_backend import openvino_device
from vledge.runtimes.selection import available_placements, choose_placement, install_hint, readable_chain
from vledge.targets import Placement, get_target

CPU_ONLY = {"onnxruntime": ["cpu"]}
CUDA_NO_TRT = {"onnxruntime": ["cpu", "cuda"]}
GPU_FULL = {"onnxruntime": ["cpu", "cuda", "tensorrt"]}
OV_NO_NPU = {"openvino": ["CPU", "GPU"], "onnxruntime": ["cpu"]}


def chain(target):
    return get_target(target).chain


@pytest.mark.parametrize(
    "target, available, device, expected",
    [
        ("cpu", CPU_ONLY, "auto", Placement("onnxruntime", "cpu")),
        ("jetson", GPU_FULL, "auto", Placement("onnxruntime", "tensorrt")),
        ("jetson", CUDA_NO_TRT, "auto", Placement("onnxruntime", "cuda")),
        ("jetson", CPU_ONLY, "auto", Placement("onnxruntime", "cpu")),
        ("cuda", CPU_ONLY, "auto", Placement("onnxruntime", "cpu")),
        ("intel-npu", OV_NO_NPU, "auto", Placement("openvino", "CPU")),
        ("intel-cpu", OV_NO_NPU, "gpu", Placement("openvino", "GPU")),  # not in the chain, but OpenVINO has it
        ("intel-cpu", CPU_ONLY, "auto", Placement("onnxruntime", "cpu")),  # OpenVINO not installed
        ("jetson", GPU_FULL, "cuda", Placement("onnxruntime", "cuda")),
        ("jetson", GPU_FULL, "CPU", Placement("onnxruntime", "cpu")),  # device names in any case
        ("cpu", OV_NO_NPU, "openvino:CPU", Placement("openvino", "CPU")),
    ],
)
def test_choice(target, available, device, expected):
    placement, _ = choose_placement(chain(target), available, device)
    assert placement == expected


def test_reachable_preference_gives_no_warning():
    assert choose_placement(chain("jetson"), GPU_FULL)[1] == []


def test_cuda_without_tensorrt_warns_once_with_the_extra():
    placement, warnings = choose_placement(chain("jetson"), CUDA_NO_TRT)
    assert placement == Placement("onnxruntime", "cuda")
    assert warnings == [
        "onnxruntime:tensorrt is not available here: onnxruntime sees no tensorrt device (it has: cpu, cuda); "
        'to use it: pip install "vledge[gpu]" (onnxruntime-gpu in place of onnxruntime, and TensorRT). '
        "Falling back to onnxruntime:cuda"
    ]


def test_only_cpu_skips_the_whole_gpu_chain_in_one_warning():
    placement, warnings = choose_placement(chain("jetson"), CPU_ONLY)
    assert placement == Placement("onnxruntime", "cpu")
    assert len(warnings) == 1 and warnings[0].endswith("Falling back to onnxruntime:cpu")


def test_requested_device_falls_back_along_the_rest_of_the_chain():
    placement, warnings = choose_placement(chain("intel-npu"), OV_NO_NPU, "npu")
    assert placement == Placement("openvino", "CPU")
    assert "openvino sees no NPU device (it has: CPU, GPU)" in warnings[0]
    assert "the Intel NPU driver" in warnings[0]


def test_strict_names_the_extra():
    with pytest.raises(BackendUnavailableError) as err:
        choose_placement(chain("jetson"), CUDA_NO_TRT, strict=True)
    assert 'pip install "vledge[gpu]"' in str(err.value)
    assert "strict=True: not falling back" in str(err.value)


def test_strict_missing_backend_names_its_extra():
    with pytest.raises(BackendUnavailableError, match=r'openvino is not installed; to use it: pip install "vledge\[openvino\]"'):
        choose_placement(chain("intel-cpu"), CPU_ONLY, strict=True)


def test_strict_with_reachable_device_succeeds():
    assert choose_placement(chain("cuda"), CUDA_NO_TRT, "cuda", strict=True) == (Placement("onnxruntime", "cuda"), [])


def test_nothing_installed_lists_every_hint():
    with pytest.raises(BackendUnavailableError) as err:
        choose_placement(chain("intel-cpu"), {})
    message = str(err.value)
    assert "no runtime can run this bundle here (tried openvino:CPU, onnxruntime:cpu)" in message
    assert 'vledge[openvino]' in message and 'vledge[onnx]' in message


def test_unknown_device_lists_choices():
    with pytest.raises(ConfigError, match=r"device 'tpu' cannot run this bundle; choose 'auto' or one of: cpu, cuda, tensorrt"):
        choose_placement(chain("cpu"), CPU_ONLY, "tpu")


def test_ort_providers():
    assert ort_providers("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert ort_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_providers("tensorrt", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(BackendUnavailableError, match=r"ONNX Runtime here has no TensorrtExecutionProvider \(it has: "
                       r"CUDAExecutionProvider, CPUExecutionProvider\); to use it: pip install \"vledge\[gpu\]\""):
        ort_providers("tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_openvino_device():
    assert openvino_device("npu", ["CPU", "NPU"]) == "NPU"
    assert openvino_device("GPU", ["CPU", "GPU.0", "GPU.1"]) == "GPU"
    with pytest.raises(BackendUnavailableError, match=r"OpenVINO sees no NPU device \(it has: CPU\)"):
        openvino_device("NPU", ["CPU"])


def test_available_placements_probes_this_machine():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    found = available_placements()
    assert {Placement("onnxruntime", "cpu"), Placement("openvino", "CPU")} <= found
    assert all(p.backend != "torch" for p in found)  # torch is probed only when asked for


def test_readable_chain_drops_backends_that_cannot_open_the_format():
    keep, dropped = readable_chain(chain("intel-cpu"), {"openvino"})
    assert keep == [Placement("openvino", "CPU")] and dropped == [Placement("onnxruntime", "cpu")]
    assert readable_chain(chain("intel-cpu"), {"onnx"})[0] == list(chain("intel-cpu"))


def test_every_backend_file_is_found_and_registers_its_backend():
    folder = Path(__file__).resolve().parent.parent / "runtimes"
    files = sorted(f"vledge.runtimes.{p.stem}" for p in folder.glob("*_backend.py"))
    assert backend_modules() == files and len(files) >= 3
    registered = {RUNTIMES.get(name).__module__ for name in RUNTIMES.names()}
    assert registered == set(files)


def test_hints_come_from_the_backends_declarations():
    assert install_hint(Placement("onnxruntime", "cpu")) == 'pip install "vledge[onnx]"'
    assert install_hint(Placement("torch", "cuda")) == (
        'pip install "vledge[compress]" (a CUDA build of torch and an NVIDIA GPU)')
    assert install_hint(Placement("tflite", "cpu")) == 'pip install "vledge[tflite]"'  # no such backend registered


def test_a_backend_must_declare_its_facts():
    class Incomplete(Runtime):
        name = "incomplete"
        addressable = ("cpu",)

    with pytest.raises(ConfigError, match=r"runtime backend .*Incomplete does not declare reads, extra; set them"):
        backend(Incomplete)

    class StrayHint(Incomplete):
        reads, extra = frozenset({"onnx"}), "onnx"
        device_hints = {"GPU": "a driver"}

    with pytest.raises(ConfigError, match=r"extras or hints for GPU, which it does not address \(it addresses: cpu\)"):
        backend(StrayHint)
    assert "incomplete" not in RUNTIMES
