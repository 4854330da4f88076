"""glmlab.quantization: THUDM's int4/int8 layout byte for byte, the quantized model against a
plain one holding the dequantized weights, THUDM folders, training on a quantized base, merging.

References are built here by hand (the packing from a worked example, the scales and rounding
from the formula), not with the functions under test.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import SPO_TEST, SPO_TRAIN, run_train, train_argv
from safetensors.torch import load_file, save_file

from glmlab import CheckpointError, load_model, quantization
from glmlab.args import ArgsError, TrainArgs
from glmlab.data import encode_prompt, read_samples
from glmlab.generation import generate_ids
from glmlab.inference import load_for_inference
from glmlab.methods import get_strategy
from glmlab.quantization import (
    QuantizedLinear,
    dequantize_weight,
    pack_int4,
    quantize,
    quantize_weight,
    unpack_int4,
)
from glmlab.tiny import make_tiny

QUANTIZED = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")


def _ids(mode: str) -> torch.Tensor:
    return (
        torch.tensor([[5, 17, 9, 30, 2, 11, 40, 8]])
        if mode != "glm"
        else torch.tensor([[5, 17, 9, 30, 2, 11]])
    )


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _hand_quantize(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The formula, written out: scale = max|w| / (2^(b-1) - 1) per row, q = round(w / scale)."""
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().max(dim=1).values / qmax
    q = torch.round(w / scale[:, None]).clamp(-qmax, qmax)
    return q, scale


def _hand_pack(q: torch.Tensor) -> torch.Tensor:
    """Two values per byte, the even column in the high nibble (THUDM's int4WeightCompression)."""
    nibbles = (q.to(torch.int64) & 0xF).tolist()
    rows = [
        [(row[2 * k] << 4) | row[2 * k + 1] for k in range(len(row) // 2)]
        for row in nibbles
    ]
    return torch.tensor(rows, dtype=torch.uint8).view(torch.int8)


def _is_quantized_name(name: str) -> bool:
    return (
        name.endswith(".weight")
        and name.rsplit(".", 2)[-2] in QUANTIZED
        and ".layers." in name
    )


# --------------------------------------------------------------------------- the format
def test_int4_packing_matches_a_hand_worked_example():
    values = torch.tensor([[-7, 7, 3, -1], [0, -8, 1, 0]], dtype=torch.int8)
    # -7 = 0b1001, 7 = 0b0111 -> 0x97 = 151 = -105 as int8; 3, -1 = 0b0011, 0b1111 -> 0x3F = 63;
    # 0, -8 = 0b0000, 0b1000 -> 0x08 = 8; 1, 0 -> 0x10 = 16.
    expected = torch.tensor([[-105, 63], [8, 16]], dtype=torch.int8)
    assert torch.equal(pack_int4(values), expected)
    assert torch.equal(unpack_int4(expected), values)
    every = torch.arange(-8, 8, dtype=torch.int8).repeat(
        3, 2
    )  # every 4-bit value in both nibbles
    assert torch.equal(unpack_int4(pack_int4(every)), every)
    assert torch.equal(pack_int4(every), _hand_pack(every))


@pytest.mark.parametrize("bits", [4, 8])
def test_quantize_dequantize_within_half_a_step(bits):
    torch.manual_seed(0)
    w = (
        torch.randn(12, 20) * torch.logspace(-3, 1, 12)[:, None]
    )  # rows of very different scales
    w[3] = 0.0  # an all-zero row must not divide by zero
    packed, scale = quantize_weight(w, bits)
    assert packed.dtype == torch.int8 and packed.shape == (12, 20 * bits // 8)
    _, hand_scale = _hand_quantize(w, bits)
    assert torch.allclose(scale, hand_scale, rtol=1e-6, atol=0)
    values = unpack_int4(packed) if bits == 4 else packed
    assert values.abs().max() <= 2 ** (bits - 1) - 1
    assert torch.equal(values[3], torch.zeros(20, dtype=torch.int8)) and scale[3] == 0
    w_hat = dequantize_weight(packed, scale, bits)
    assert torch.equal(w_hat, values.float() * scale[:, None])
    assert ((w - w_hat).abs() <= scale[:, None] / 2 * (1 + 1e-5)).all()


def test_the_quantized_weight_gets_no_gradient_the_input_does():
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 6)
    layer = QuantizedLinear.from_linear(linear, 4)
    assert [name for name, _ in layer.named_parameters()] == [
        "bias"
    ] and not layer.bias.requires_grad
    assert {name for name, _ in layer.named_buffers()} == {"weight", "weight_scale"}
    reference = torch.nn.Linear(16, 6)
    with torch.no_grad():
        reference.weight.copy_(layer.dequantized_weight())
        reference.bias.copy_(linear.bias)
    x = torch.randn(3, 5, 16, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    (layer(x) * torch.arange(6.0)).sum().backward()
    (reference(x_ref) * torch.arange(6.0)).sum().backward()
    assert torch.equal(x.grad, x_ref.grad)
    assert layer.weight.grad is None and layer.bias.grad is None
    # In 16 bits a 4-bit layer holds a quarter of the bytes (plus one scale per row).
    half = QuantizedLinear.from_linear(torch.nn.Linear(64, 32).to(torch.bfloat16), 4)
    quantized_bytes = sum(b.numel() * b.element_size() for b in half.buffers())
    assert quantized_bytes == 32 * 64 // 2 + 32 * 2 < 0.27 * (32 * 64 * 2)


def test_cuda_kernel_failure_falls_back_with_one_warning(monkeypatch):
    def unavailable():
        raise ImportError("No module named 'cpm_kernels'")

    monkeypatch.setattr(quantization, "_CudaKernels", unavailable)
    monkeypatch.setattr(quantization, "_kernels", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert quantization._cuda_kernels() is None
        assert quantization._cuda_kernels() is None
    assert (
        len(caught) == 1
        and "cpm_kernels" in str(caught[0].message)
        and "torch" in str(caught[0].message)
    )


# --------------------------------------------------------------------------- the CUDA kernels, without a GPU
# What runs on a GPU is glmlab's CUDA C (quantization._KERNEL_SOURCE), compiled by NVRTC and launched
# through cpm_kernels. No GPU here, so three checks stand in: the kernels' code, compiled on the host
# by g++ and run on an emulated grid, computes the torch path's values bit for bit; nvcc and ptxas
# accept the source for every architecture CUDA supports; cpm_kernels' loader imports where
# setuptools no longer has pkg_resources. quantization._CudaKernels.check repeats the first check on
# the GPU itself before a kernel is ever used.
_HOST_PRELUDE = r"""
#include <cstring>
struct Dim3 { unsigned x, y, z; };
static Dim3 blockIdx, threadIdx, blockDim;
#define __global__
#define __device__
#define __forceinline__ inline
static inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
// The device's cvt.f32.f16 / cvt.rn.f16.f32, as IEEE conversions (round to nearest even) on the host.
static inline float half_to_float(unsigned short h) { _Float16 x; std::memcpy(&x, &h, 2); return (float)x; }
static inline unsigned short float_to_half(float f) {
    _Float16 x = (_Float16)f; unsigned short h; std::memcpy(&h, &x, 2); return h;
}
"""
_HOST_LAUNCHERS = r"""
// A grid run thread by thread: the kernels share nothing between threads, so order does not matter.
#define GLMLAB_LAUNCH(KERNEL, T)                                                                 \
extern "C" void launch_##KERNEL(const signed char* w, const T* s, T* o, int rows, int cols,     \
                                unsigned grid, unsigned block) {                                 \
    blockDim = Dim3{block, 1, 1};                                                                \
    for (unsigned b = 0; b < grid; ++b)                                                          \
        for (unsigned t = 0; t < block; ++t) {                                                   \
            blockIdx = Dim3{b, 0, 0};                                                            \
            threadIdx = Dim3{t, 0, 0};                                                           \
            KERNEL(w, s, o, rows, cols);                                                         \
        }                                                                                        \
}
GLMLAB_LAUNCH(glmlab_int8_to_half, unsigned short)
GLMLAB_LAUNCH(glmlab_int4_to_half, unsigned short)
GLMLAB_LAUNCH(glmlab_int8_to_bf16, unsigned short)
GLMLAB_LAUNCH(glmlab_int4_to_bf16, unsigned short)
GLMLAB_LAUNCH(glmlab_int8_to_float, float)
GLMLAB_LAUNCH(glmlab_int4_to_float, float)
"""


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed")
    folder = tmp_path_factory.mktemp("kernels")
    source = folder / "kernels.cpp"
    source.write_text(
        _HOST_PRELUDE + quantization._KERNEL_PORTABLE + _HOST_LAUNCHERS,
        encoding="utf-8",
    )
    library = folder / "kernels.so"
    subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-O2",
            "-shared",
            "-fPIC",
            str(source),
            "-o",
            str(library),
        ],
        check=True,
        capture_output=True,
    )
    return ctypes.CDLL(str(library))


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_the_cuda_kernels_compute_the_torch_values_on_an_emulated_grid(
    host_kernels, bits, dtype
):
    generator = torch.Generator().manual_seed(bits)
    # Every byte value, rows longer than one block of threads (the stride loop), and scales that
    # are zero, negative, tiny (16-bit subnormal results) and large.
    rows, cols = 6, 1100
    weight = torch.randint(
        -128, 128, (rows, cols), dtype=torch.int8, generator=generator
    )
    weight[0, :256] = torch.arange(-128, 128, dtype=torch.int16).to(torch.int8)
    scale = torch.tensor([0.0123, 0.0, -3.5, 1e-6, 300.0, 7.0e-3]).to(dtype)
    out = torch.full((rows, cols * 8 // bits), float("nan"), dtype=dtype)
    grid, block = quantization.launch_config(rows, cols)
    assert block[0] < cols and block[0] % 32 == 0 and grid == (rows, 1, 1)
    _launch(host_kernels, bits, weight, scale, out, grid[0], block[0])
    assert torch.equal(out, dequantize_weight(weight, scale, bits))
    if bits == 4:  # and the layout is THUDM's: the even column in the high nibble
        q = torch.tensor([[-8, 7, 3, -1, 0, -5]], dtype=torch.int8)
        small = torch.empty(1, 6, dtype=dtype)
        _launch(
            host_kernels, 4, _hand_pack(q), torch.ones(1, dtype=dtype), small, 1, 32
        )
        assert small.tolist() == [[-8.0, 7.0, 3.0, -1.0, 0.0, -5.0]]


def _launch(library, bits: int, weight, scale, out, grid: int, block: int) -> None:
    """One emulated launch of the host-compiled kernel for ``bits`` and ``out``'s dtype."""
    name = quantization._KERNEL_TYPES[out.dtype]
    rows, cols = weight.shape
    getattr(library, f"launch_glmlab_int{bits}_to_{name}")(
        ctypes.c_void_p(weight.data_ptr()),
        ctypes.c_void_p(scale.data_ptr()),
        ctypes.c_void_p(out.data_ptr()),
        ctypes.c_int(rows),
        ctypes.c_int(cols),
        ctypes.c_uint(grid),
        ctypes.c_uint(block),
    )


def _nvcc() -> str:
    for candidate in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip("no CUDA toolkit (nvcc) on this machine")


def test_nvcc_and_ptxas_accept_the_kernel_source_for_every_gpu_generation(tmp_path):
    """The same front end as NVRTC: the source (with the half conversions' inline PTX) compiles to
    PTX for Turing, Ampere, Ada and Hopper, ptxas assembles it, and it holds the six kernels."""
    nvcc = _nvcc()
    ptxas = Path(os.path.realpath(nvcc)).with_name("ptxas")
    source = tmp_path / "glmlab_quantization.cu"
    source.write_text(quantization._KERNEL_SOURCE, encoding="utf-8")
    for sm in (75, 80, 86, 89, 90):
        ptx = tmp_path / f"sm{sm}.ptx"
        subprocess.run(
            [
                nvcc,
                "--ptx",
                f"--gpu-architecture=compute_{sm}",
                str(source),
                "-o",
                str(ptx),
            ],
            check=True,
            capture_output=True,
        )
        entries = sorted(
            line.split()[-1].rstrip("(")
            for line in ptx.read_text().splitlines()
            if ".entry" in line
        )
        assert entries == sorted(
            f"glmlab_int{bits}_to_{name}"
            for bits in (4, 8)
            for name in quantization._KERNEL_TYPES.values()
        )
        subprocess.run(
            [
                str(ptxas),
                f"-arch=sm_{sm}",
                str(ptx),
                "-o",
                str(tmp_path / f"sm{sm}.cubin"),
            ],
            check=True,
            capture_output=True,
        )


_IMPORT_WITHOUT_PKG_RESOURCES = r"""
import importlib.util, sys, types
from pathlib import Path
sys.modules["pkg_resources"] = None  # as with setuptools >= 81: `import pkg_resources` fails
# cpm_kernels' package __init__ asks the CUDA driver for its devices; there is none here, so the
# package is entered bare and the runtime reports no device.
spec = importlib.util.find_spec("cpm_kernels")
package = types.ModuleType("cpm_kernels")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["cpm_kernels"] = package
from cpm_kernels.library import cudart
cudart.cudaGetDeviceCount = lambda: 0
from glmlab.quantization import _import_cpm_kernels
KernelFunction, LazyKernelCModule, runtime = _import_cpm_kernels()
from cpm_kernels.kernels import gemv
fatbin = Path(package.__path__[0], "kernels", "cuda", "gemv.fatbin").read_bytes()
assert gemv.gemv_kernel.code == fatbin, "cpm_kernels read its fatbin wrongly"
assert "pkg_resources" not in sys.modules, "the stand-in was left behind"
print(KernelFunction.__name__, LazyKernelCModule.__name__, runtime is cudart)
"""


def test_cpm_kernels_loads_where_setuptools_has_no_pkg_resources():
    if importlib.util.find_spec("cpm_kernels") is None:
        pytest.skip("cpm_kernels is not installed")
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITHOUT_PKG_RESOURCES],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["KernelFunction", "LazyKernelCModule", "True"]


# --------------------------------------------------------------------------- whole models and folders
def _plain_with_dequantized(folder: Path, mode: str, bits: int, half: bool = False):
    """The plain model, each quantizable weight replaced by q * scale computed by hand."""
    model = load_model(folder, mode=mode)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if _is_quantized_name(name):
                w = tensor.half().float() if half else tensor
                q, scale = _hand_quantize(w, bits)
                scale = scale.half().float() if half else scale
                tensor.copy_(q * scale[:, None])
            elif half and tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


@pytest.mark.parametrize("mode", ["glm", "glm2", "glm3"])
def test_quantized_model_equals_the_model_holding_the_dequantized_weights(
    tiny_model, mode
):
    folder = tiny_model(mode)
    for bits in (4, 8):
        model = load_model(folder, mode=mode, quantization_bit=bits)
        layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
        assert (
            len(layers) == 4 * model.config.num_layers
            and model.config.quantization_bit == bits
        )
        assert all(m.bits == bits for m in layers)
        reference = _plain_with_dequantized(folder, mode, bits)
        assert torch.equal(_logits(model, _ids(mode)), _logits(reference, _ids(mode)))
    # quantize() on a loaded model does the same as quantizing on load.
    in_place = quantize(load_model(folder, mode=mode), 4)
    assert torch.equal(
        _logits(in_place, _ids(mode)),
        _logits(load_model(folder, mode=mode, quantization_bit=4), _ids(mode)),
    )


def test_a_thudm_int4_folder_loads_as_it_is(tiny_model, tmp_path):
    """A folder written as THUDM's chatglm2-6b-int4: fp16 tensors, packed int8 weights, fp16 scales."""
    source = tiny_model("glm2")
    folder = tmp_path / "chatglm2-int4"
    folder.mkdir()
    plain = load_file(str(source / "model.safetensors"))
    tensors = {}
    for name, tensor in plain.items():
        if _is_quantized_name(name):
            q, scale = _hand_quantize(tensor.half().float(), 4)
            tensors[name] = _hand_pack(q)
            tensors[name.removesuffix("weight") + "weight_scale"] = scale.half()
        else:
            tensors[name] = tensor.half()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config.update(quantization_bit=4, torch_dtype="float16")
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.model", "tokenizer_config.json"):
        (folder / name).write_bytes((source / name).read_bytes())

    model = load_model(folder, mode="glm2")
    assert model.config.quantization_bit == 4
    qkv = model.transformer.encoder.layers[0].self_attention.query_key_value
    assert isinstance(qkv, QuantizedLinear) and qkv.weight.dtype == torch.int8
    reference = _plain_with_dequantized(source, "glm2", 4, half=True)
    assert torch.equal(_logits(model, _ids("glm2")), _logits(reference, _ids("glm2")))

    with pytest.raises(CheckpointError, match="holds 4-bit quantized weights"):
        load_model(folder, mode="glm2", quantization_bit=8)
    config["quantization_bit"] = (
        8  # the same int4 tensors under a config that says 8 bits
    )
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"wrong shape: .*query_key_value\.weight"
    ):
        load_model(folder, mode="glm2")


def test_save_pretrained_reloads_identically(tiny_model, tmp_path):
    model = load_model(tiny_model("glm"), mode="glm", quantization_bit=4)
    model.save_pretrained(tmp_path / "q4")
    assert (
        json.loads((tmp_path / "q4" / "config.json").read_text())["quantization_bit"]
        == 4
    )
    saved = load_file(str(tmp_path / "q4" / "model.safetensors"))
    qkv = "transformer.layers.0.attention.query_key_value"
    assert saved[f"{qkv}.weight"].dtype == torch.int8 and saved[
        f"{qkv}.weight"
    ].shape == (192, 32)
    assert saved[f"{qkv}.weight_scale"].shape == (192,) and f"{qkv}.bias" in saved
    reloaded = load_model(tmp_path / "q4")
    before, after = model.state_dict(), reloaded.state_dict()
    assert before.keys() == after.keys() and all(
        torch.equal(before[k], after[k]) for k in before
    )
    assert torch.equal(_logits(model, _ids("glm")), _logits(reloaded, _ids("glm")))


# --------------------------------------------------------------------------- methods, training, merging
def test_freeze_and_all_refuse_quantization(tiny_model, tmp_path):
    flags = {
        "model_name_or_path": str(tiny_model("glm2")),
        "train_path": "data/spo_train.jsonl",
        "output_dir": str(tmp_path / "out"),
        "quantization_bit": 4,
    }
    with pytest.raises(
        ArgsError,
        match=r"^--quantization_bit 4 works with --train_type lora or ptuning only",
    ):
        TrainArgs(**flags, train_type="freeze")
    with pytest.raises(ArgsError, match=r"^--quantization_bit must be 4 or 8"):
        TrainArgs(**{**flags, "quantization_bit": 3}, train_type="lora")
    quantized = load_model(tiny_model("glm2"), mode="glm2", quantization_bit=8)
    with pytest.raises(
        ValueError, match="--train_type all: the base checkpoint is quantized"
    ):
        get_strategy("all").prepare(quantized, SimpleNamespace())


def test_quantization_bit_with_train_type_all_fails_with_one_line(tiny_model, tmp_path):
    out = tmp_path / "all"
    result = run_train(
        train_argv(
            tiny_model("glm2"), out, mode="glm2", train_type="all", quantization_bit=4
        ),
        out,
    )
    assert result.proc.returncode == 2, result.explain()
    lines = [line for line in result.proc.stderr.splitlines() if line.strip()]
    assert lines[-1].endswith(
        "--quantization_bit 4 works with --train_type lora or ptuning only "
        "(all would train the quantized weights)"
    ), result.explain()
    assert not out.exists()


BASES = Path(__file__).resolve().parents[1] / "glmlab" / "assets" / "base"
# name: (mode, base, flags, the share of the first losses the last ones must stay under). The shipped
# small pretrained bases learn the four samples in a few steps (15 -> ~2): the loss must halve.
RUNS = {
    "glm2-int4-lora": (
        "glm2",
        BASES / "glm2",
        {
            "train_type": "lora",
            "quantization_bit": 4,
            "lora_dim": 8,
            "lora_alpha": 32,
            "lora_module_name": "query_key_value,dense_h_to_4h",
            "learning_rate": 1e-2,
        },
        0.5,
    ),
    "glm2-int8-ptuning": (
        "glm2",
        BASES / "glm2",
        {
            "train_type": "ptuning",
            "quantization_bit": 8,
            "pre_seq_len": 8,
            "prefix_projection": "true",
            "learning_rate": 1e-1,
        },
        0.5,
    ),
    "glm-int8-lora": (
        "glm",
        BASES / "glm",
        {
            "train_type": "lora",
            "quantization_bit": 8,
            "lora_dim": 8,
            "lora_alpha": 32,
            "lora_module_name": "query_key_value,dense,dense_h_to_4h,dense_4h_to_h",
            "learning_rate": 1e-2,
        },
        0.5,
    ),
}


@pytest.fixture(scope="module")
def four_samples(tmp_path_factory) -> Path:
    """Four training samples, each four times: 4 optimizer steps per epoch of 2 x 2 samples, 12 in 3 epochs."""
    path = tmp_path_factory.mktemp("data") / "four.jsonl"
    path.write_text(
        "".join(
            SPO_TRAIN.read_text(encoding="utf-8").splitlines(keepends=True)[:4] * 4
        ),
        encoding="utf-8",
    )
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_training_on_a_quantized_base_lowers_the_loss(
    tiny_model, four_samples, tmp_path, name
):
    mode, base, flags, fall = RUNS[name]
    out = tmp_path / name
    argv = train_argv(
        base or tiny_model(mode),
        out,
        mode=mode,
        train_path=four_samples,
        num_train_epochs=3,
        **flags,
    )
    result = run_train(argv, out)
    assert result.proc.returncode == 0, result.explain()
    losses = result.losses
    assert len(losses) == 12 and max(losses[-3:]) < fall * min(losses[:3]), losses
    checkpoint = result.checkpoints()[-1]
    info = json.loads((checkpoint / "glmlab_checkpoint.json").read_text())
    assert info["args"]["quantization_bit"] == flags["quantization_bit"]
    # Reloaded for inference on the base quantized as in training, and it generates.
    model, tokenizer, _ = load_for_inference(checkpoint)
    bits = {m.bits for m in model.modules() if isinstance(m, QuantizedLinear)}
    assert bits == {flags["quantization_bit"]}
    sample = read_samples(SPO_TEST, references=True)[0]
    prompt = encode_prompt(sample, tokenizer, mode, 32)
    assert generate_ids(
        model, tokenizer, [prompt], mode, max_new_tokens=4, min_new_tokens=4
    )[0]


def test_merge_lora_onto_a_quantized_base_merges_into_a_dequantized_copy(
    tiny_model, tmp_path, capsys
):
    from glmlab.merge_lora import main
    from glmlab.quantized_lora import MERGE_REFUSED

    base = make_tiny("glm3", tmp_path / "base", seed=3)
    torch.manual_seed(0)
    args = SimpleNamespace(
        lora_dim=4,
        lora_alpha=16,
        lora_dropout=0.0,
        lora_module_name="query_key_value,dense_4h_to_h",
    )
    strategy = get_strategy("lora")
    peft_model = strategy.prepare(
        load_model(base, mode="glm3", quantization_bit=4), args
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    from glmlab import load_tokenizer

    strategy.save(peft_model, load_tokenizer(base, mode="glm3"), adapter)
    record = {
        "train_type": "lora",
        "mode": "glm3",
        "base_model": str(base),
        "args": {"quantization_bit": 4},
    }
    (adapter / "glmlab_checkpoint.json").write_text(json.dumps(record))

    unmerged, _, _ = load_for_inference(adapter)  # the quantized base, as trained
    assert any(isinstance(m, QuantizedLinear) for m in unmerged.modules())
    with pytest.raises(ValueError, match="cannot be merged in place"):
        unmerged.merge_and_unload()
    assert "dequantize the base first" in MERGE_REFUSED

    assert (
        main(["--adapter", str(adapter), "--output_dir", str(tmp_path / "merged")]) == 0
    )
    assert (
        "the base is 4-bit quantized: merging into its dequantized weights"
        in capsys.readouterr().out
    )
    merged = load_model(tmp_path / "merged")  # a plain 16/32-bit folder
    assert merged.config.quantization_bit == 0
    assert not any(isinstance(m, QuantizedLinear) for m in merged.modules())
    assert (
        json.loads((tmp_path / "merged" / "glmlab_merge.json").read_text())[
            "base_quantization_bit"
        ]
        == 4
    )
    ids = _ids("glm3")
    torch.testing.assert_close(
        _logits(merged, ids), _logits(unmerged, ids), rtol=1e-5, atol=1e-5
    )
    assert not torch.allclose(
        _logits(merged, ids), _logits(load_model(base, mode="glm3"), ids), atol=1e-3
    )
