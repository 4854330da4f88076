"""Weight-only int8 / int4 linear layers, stored and computed the way the official ChatGLM code does.

What is quantized: ``query_key_value`` and ``dense`` of every attention and ``dense_h_to_4h`` and
``dense_4h_to_h`` of every MLP (both generations' names); embeddings, norms, the output layer and
the P-tuning prefix encoder stay in 16/32 bits, as in THUDM's ``quantize(model, bits)``.

How (symmetric, one scale per output row)::

    weight_scale[i] = max_j |w[i, j]| / (2 ** (bits - 1) - 1)        # 127 for int8, 7 for int4
    q[i, j]         = clamp(round(w[i, j] / weight_scale[i]))         # int8, in [-127, 127] / [-7, 7]
    w'[i, j]        = q[i, j] * weight_scale[i]                       # what forward multiplies by

so ``|w - w'| <= weight_scale / 2`` element by element. Biases are kept as they are.

Storage (THUDM's int4/int8 checkpoint layout, key for key): ``<module>.weight`` int8 of shape
``(out, in)`` for 8 bits and ``(out, in / 2)`` for 4 bits, ``<module>.weight_scale`` ``(out,)`` in
the model's dtype (``float16`` in THUDM's folders), ``<module>.bias``. 4-bit values are packed two
per byte, **the even column in the high nibble, the odd column in the low nibble**, each a 4-bit
two's-complement number::

    byte = (q[i, 2k] << 4) | (q[i, 2k + 1] & 0xF)
    q[i, 2k] = byte >> 4 (arithmetic shift)      q[i, 2k + 1] = (byte << 4) >> 4 (as int8)

Why that order is certain: THUDM's ``quantization.py`` ships its kernels only as a compiled fatbin
(a base64/bz2 blob; it holds SASS, no PTX and no source), but the same kernels with the same names
and signatures (``int4WeightCompression``, ``int4WeightExtractionHalf/Float``, ...) are published as
CUDA C in THUDM/GLM-130B ``cuda/quantization.cu``: compression writes ``(input[2i] << 4) |
(input[2i + 1] & 0b1111)`` and extraction takes ``high = original >> 4`` to output ``2i`` and
``low = (original << 4) >> 4`` to ``2i + 1``, on ``int8_t`` (so both nibbles are sign-extended).
The CPU kernels THUDM ships with chatglm-6b-int4 (``quantization_kernels*.c``:
``compress_int4_weight``, ``extract_int4_weight_to_float``) do the same byte by byte.

In memory the quantized tensors are buffers (int8 and the scale), not parameters: nothing can
train them, DeepSpeed never hands them to the optimizer or partitions them, and a 4-bit layer
really holds half a byte per weight. The forward pass dequantizes the layer's weight to the
activation dtype and multiplies (:class:`QuantizedMatmul`, a custom autograd function): the input
gets its gradient ``grad_out @ w'``; the quantized weight never gets one and the input is not even
saved for a weight gradient.

Dequantizing runs on CUDA through kernels written here in CUDA C (the layout above), compiled once
with NVRTC and launched through ``cpm_kernels``' loader (``pip install glmlab[gpu]``), as THUDM's
code launches its own; everywhere else -- the CPU, or when ``cpm_kernels``, NVRTC or the
compilation is missing or fails (then with one warning) -- a pure torch unpack-and-multiply
computes the very same values. Before their first use the kernels are run on the GPU against
that torch path and must agree bit for bit, or they are not used (the same one warning).

:func:`quantize` replaces a model's layers in place (the 16/32-bit weights are freed);
:func:`glmlab.load_model` quantizes while it loads (``quantization_bit=4``) or loads a THUDM
int4/int8 folder as it is. :func:`dequantize` turns the layers back into ``nn.Linear`` holding
``w'`` (``glmlab.merge_lora`` merges LoRA into such a dequantized copy).
"""

from __future__ import annotations

import ctypes
import re
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

BITS = (4, 8)
# The linear layers THUDM's quantize() replaces, under both generations' names (peft prefixes allowed).
QUANTIZED_NAMES = re.compile(
    r"(^|\.)layers\.\d+\.(attention|self_attention)\.(query_key_value|dense)$"
    r"|(^|\.)layers\.\d+\.mlp\.(dense_h_to_4h|dense_4h_to_h)$"
)


def check_bits(bits: Any, what: str = "quantization_bit") -> int:
    """``bits`` as an int if it is 4 or 8; otherwise a one-line ``ValueError`` naming ``what``."""
    if bits not in BITS or isinstance(bits, bool):
        raise ValueError(f"{what} must be 4 or 8 (got {bits!r})")
    return int(bits)


def _qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1  # 127 for int8, 7 for int4


# --------------------------------------------------------------------------- pure torch reference
def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """(rows, 2k) int8 values in [-8, 7] -> (rows, k) int8 bytes: even column high nibble, odd low."""
    if values.shape[-1] % 2:
        raise ValueError(
            f"int4 packing needs an even number of columns (got {values.shape[-1]})"
        )
    wide = values.to(torch.int16)
    high, low = wide[..., 0::2] & 0xF, wide[..., 1::2] & 0xF
    return ((high << 4) | low).to(torch.uint8).view(torch.int8)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(rows, k) int8 bytes -> (rows, 2k) int8 values, both nibbles sign-extended."""
    wide = packed.to(torch.int16)  # sign-extended byte
    high = wide >> 4  # arithmetic shift: the high nibble with its sign
    low = ((wide & 0xF) ^ 8) - 8  # the low nibble as a 4-bit two's-complement number
    return torch.stack((high, low), dim=-1).flatten(-2).to(torch.int8)


def quantize_weight(
    weight: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weight -> (packed int8 weight, (out,) scale in the weight's dtype).

    The division uses the stored (rounded) scale in fp32, so ``|w - q * scale| <= scale / 2``
    holds for the scale that is kept. An all-zero row gets scale 0 and zeros.
    """
    bits = check_bits(bits)
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(
            f"quantize_weight needs a 2-D float weight (got {tuple(weight.shape)} {weight.dtype})"
        )
    qmax = _qmax(bits)
    scale = (weight.abs().amax(dim=-1).float() / qmax).to(weight.dtype)  # (out,)
    divisor = scale.float().masked_fill(scale == 0, 1.0)[:, None]
    q = (
        torch.round(weight.float() / divisor).clamp_(-qmax, qmax).to(torch.int8)
    )  # (out, in)
    return (pack_int4(q) if bits == 4 else q), scale


def _dequantize_torch(
    weight: torch.Tensor, scale: torch.Tensor, bits: int
) -> torch.Tensor:
    q = unpack_int4(weight) if bits == 4 else weight
    return q.to(scale.dtype) * scale[:, None]


def dequantize_weight(
    weight: torch.Tensor, scale: torch.Tensor, bits: int
) -> torch.Tensor:
    """Packed int8 ``weight`` and its ``scale`` -> the (out, in) weight ``q * scale`` in the scale's dtype.

    On CUDA through the NVRTC-compiled kernels when they load (see the module docstring), else torch;
    both give the same values (the int times the scale, rounded once to the scale's dtype).
    """
    if weight.is_cuda:
        kernels = _cuda_kernels()
        if kernels is not None:
            try:
                return kernels.extract(weight, scale, bits)
            except Exception as err:  # noqa: BLE001 - a launch failure must not stop training
                _disable_kernels(f"a cpm_kernels launch failed ({err})")
    return _dequantize_torch(weight, scale, bits)


# --------------------------------------------------------------------------- CUDA kernels (cpm_kernels)
# Written for glmlab from the layout in the module docstring; one block per output row, threads
# stride over its packed columns. 16-bit values travel as unsigned short and are converted with
# PTX (half) or bit operations (bfloat16, round to nearest even), so no CUDA header is needed.
# Two parts, so that tests can compile the portable one on the host with g++ (the half
# conversions replaced by the host's IEEE ones, which round the same way) and run the kernels
# on an emulated grid: see tests/test_quantization.py.
_KERNEL_HALF_PTX = r"""
__device__ __forceinline__ float half_to_float(unsigned short h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short float_to_half(float f) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
"""
_KERNEL_PORTABLE = r"""
__device__ __forceinline__ float bf16_to_float(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}
__device__ __forceinline__ unsigned short float_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
__device__ __forceinline__ float f32_to_float(float f) { return f; }
__device__ __forceinline__ float float_to_f32(float f) { return f; }

#define GLMLAB_EXTRACT(NAME, T, LOAD, STORE)                                                     \
extern "C" __global__ void glmlab_int8_to_##NAME(const signed char* weight, const T* scale,      \
                                                  T* out, int rows, int cols) {                  \
    const long long row = blockIdx.x;                                                            \
    const float s = LOAD(scale[row]);                                                            \
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {                                 \
        const long long i = row * cols + j;                                                      \
        out[i] = STORE((float)weight[i] * s);                                                    \
    }                                                                                            \
}                                                                                                \
extern "C" __global__ void glmlab_int4_to_##NAME(const signed char* weight, const T* scale,      \
                                                  T* out, int rows, int cols) {                  \
    const long long row = blockIdx.x;                                                            \
    const float s = LOAD(scale[row]);                                                            \
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {                                 \
        const long long i = row * cols + j;                                                      \
        const signed char byte = weight[i];                                                      \
        const int high = byte >> 4;                                                              \
        const int low = ((signed char)(byte << 4)) >> 4;                                         \
        out[2 * i] = STORE((float)high * s);                                                     \
        out[2 * i + 1] = STORE((float)low * s);                                                  \
    }                                                                                            \
}

GLMLAB_EXTRACT(half, unsigned short, half_to_float, float_to_half)
GLMLAB_EXTRACT(bf16, unsigned short, bf16_to_float, float_to_bf16)
GLMLAB_EXTRACT(float, float, f32_to_float, float_to_f32)
"""
_KERNEL_SOURCE = _KERNEL_HALF_PTX + _KERNEL_PORTABLE
_KERNEL_TYPES = {torch.float16: "half", torch.bfloat16: "bf16", torch.float32: "float"}


def compile_kernels(arch: str) -> bytes:
    """The kernels above as PTX for ``arch`` (e.g. ``"compute_90"``), compiled with NVRTC via cpm_kernels."""
    from cpm_kernels.library import nvrtc

    program = nvrtc.nvrtcProgram()
    nvrtc.nvrtcCreateProgram(
        program, _KERNEL_SOURCE, "glmlab_quantization.cu", 0, [], []
    )
    try:
        nvrtc.nvrtcCompileProgram(program, 1, [f"--gpu-architecture={arch}"])
        buffer = ctypes.create_string_buffer(nvrtc.nvrtcGetPTXSize(program))
        nvrtc.nvrtcGetPTX(program, buffer)
    finally:
        nvrtc.nvrtcDestroyProgram(program)
    return buffer.raw  # NUL-terminated PTX, as cuModuleLoadData wants it


def launch_config(
    rows: int, cols: int
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Grid and block of an extraction launch: a block per output row, up to 1024 threads striding its ``cols`` bytes."""
    return (rows, 1, 1), (min(1024, -(-cols // 32) * 32), 1, 1)


def _import_cpm_kernels():
    """cpm_kernels' kernel loader, imported even where ``pkg_resources`` is gone.

    cpm_kernels 1.0.11 (its last release) imports ``pkg_resources``, which setuptools removed in
    version 81, and only calls its ``resource_exists`` / ``resource_string`` while importing, to read
    its own fatbins. Where it is missing, a stand-in offering just those two (files beside the named
    module) is in ``sys.modules`` for the duration of the import and taken out again after.
    """
    try:
        import pkg_resources  # noqa: F401 - only to know whether it exists
    except ImportError:
        shim = types.ModuleType("pkg_resources")

        def path(module: str, name: str) -> Path:
            return Path(sys.modules[module].__file__).parent / name

        shim.resource_exists = lambda module, name: path(module, name).is_file()
        shim.resource_string = lambda module, name: path(module, name).read_bytes()
        sys.modules["pkg_resources"] = shim
        try:
            import cpm_kernels.kernels.base  # noqa: F401
        finally:
            if sys.modules.get("pkg_resources") is shim:
                del sys.modules["pkg_resources"]
    from cpm_kernels.kernels.base import KernelFunction, LazyKernelCModule
    from cpm_kernels.library import cudart

    return KernelFunction, LazyKernelCModule, cudart


class _CudaKernels:
    """The compiled extraction kernels, launched through cpm_kernels' lazy per-device module loader.

    Built once, then checked on the current GPU against the torch path on a few rows of every
    (bits, dtype): a kernel that launches but disagrees, bit for bit, is never used (``RuntimeError``,
    which :func:`_cuda_kernels` turns into the one warning and the torch path).
    """

    def __init__(self) -> None:
        KernelFunction, LazyKernelCModule, cudart = _import_cpm_kernels()
        # cpm_kernels may load its own CUDA runtime, whose current device torch's does not set.
        self.set_device = cudart.cudaSetDevice

        major, minor = torch.cuda.get_device_capability()
        module = LazyKernelCModule(compile_kernels(f"compute_{major}{minor}"))
        self.functions = {
            (bits, dtype): KernelFunction(module, f"glmlab_int{bits}_to_{name}")
            for bits in BITS
            for dtype, name in _KERNEL_TYPES.items()
        }
        self.check(torch.device("cuda", torch.cuda.current_device()))

    def check(self, device: torch.device) -> None:
        """Every kernel against :func:`_dequantize_torch` on ``device`` (rows past 1024 bytes, so the stride loop runs)."""
        generator = torch.Generator().manual_seed(0)
        weight = torch.randint(
            -128, 128, (3, 1030), dtype=torch.int8, generator=generator
        )
        scale = torch.tensor([0.0, 0.0123, -3.5])
        for bits, dtype in self.functions:
            w, s = weight.to(device), scale.to(device, dtype)
            got, want = self.extract(w, s, bits), _dequantize_torch(w, s, bits)
            torch.cuda.synchronize(device)
            if not torch.equal(got, want):
                raise RuntimeError(
                    f"the compiled int{bits} kernel for {dtype} disagrees with the torch path on this GPU"
                )

    def extract(
        self, weight: torch.Tensor, scale: torch.Tensor, bits: int
    ) -> torch.Tensor:
        if scale.dtype not in _KERNEL_TYPES or weight.dtype != torch.int8:
            return _dequantize_torch(weight, scale, bits)
        weight, scale = weight.contiguous(), scale.contiguous()
        rows, cols = weight.shape
        out = torch.empty(
            rows, cols * (8 // bits), dtype=scale.dtype, device=weight.device
        )
        if rows == 0 or cols == 0:
            return out
        grid, block = launch_config(rows, cols)
        with torch.cuda.device(weight.device):
            self.set_device(
                weight.device.index
                if weight.device.index is not None
                else torch.cuda.current_device()
            )
            stream = torch.cuda.current_stream(weight.device).cuda_stream
            self.functions[(bits, scale.dtype)](
                grid,
                block,
                0,
                stream,
                [
                    ctypes.c_void_p(weight.data_ptr()),
                    ctypes.c_void_p(scale.data_ptr()),
                    ctypes.c_void_p(out.data_ptr()),
                    ctypes.c_int32(rows),
                    ctypes.c_int32(cols),
                ],
            )
        return out


_kernels: _CudaKernels | None | bool = None  # None: not tried yet; False: unavailable
_kernels_lock = threading.Lock()


def _disable_kernels(reason: str) -> None:
    global _kernels
    _kernels = False
    warnings.warn(
        f"glmlab.quantization: CUDA extraction kernels unavailable ({reason}); "
        "dequantizing with torch instead (same values, a little slower)",
        RuntimeWarning,
        stacklevel=3,
    )


def _cuda_kernels() -> _CudaKernels | None:
    """The kernels, built on first use; ``None`` (after one warning) when they cannot be."""
    global _kernels
    if _kernels is None:
        with _kernels_lock:
            if _kernels is None:
                try:
                    _kernels = _CudaKernels()
                except Exception as err:  # noqa: BLE001 - ImportError, missing NVRTC/driver, compile errors
                    first = (
                        str(err).strip().splitlines()[0]
                        if str(err).strip()
                        else type(err).__name__
                    )
                    # cpm_kernels found no such library:
                    if "is not initialized" in first:
                        first += (
                            " -- cpm_kernels looks for libcudart.so, libnvrtc.so and libcublasLt.so in"
                            " $CUDA_PATH/lib64, /usr/local/cuda/lib64 or the linker cache (a CUDA toolkit)"
                        )
                    _disable_kernels(f"{type(err).__name__}: {first}")
    return _kernels or None


def kernels_available() -> bool:
    """Whether CUDA dequantization goes through the compiled kernels (tries to build them once)."""
    return torch.cuda.is_available() and _cuda_kernels() is not None


# --------------------------------------------------------------------------- the layer
class QuantizedMatmul(torch.autograd.Function):
    """``F.linear(x, dequantize(weight, scale), bias)`` with gradients for ``x`` (and a trainable bias) only.

    The quantized weight is an int8 tensor and gets no gradient; only the (small) quantized
    tensors are saved for backward, which dequantizes again, as THUDM's ``W8A16Linear`` does,
    but without keeping ``x`` for a weight gradient that is never used. ``F.linear`` as in
    ``nn.Linear``: the layer computes exactly what an ``nn.Linear`` holding ``q * scale`` computes.
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor | None,
        bits: int,
    ) -> torch.Tensor:
        w = dequantize_weight(weight, scale, bits).to(x.dtype)  # (out, in)
        ctx.save_for_backward(weight, scale)
        ctx.bits = bits
        return F.linear(x, w, bias)  # (..., in) -> (..., out)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            weight, scale = ctx.saved_tensors
            w = dequantize_weight(weight, scale, ctx.bits).to(
                grad_out.dtype
            )  # (out, in)
            grad_x = torch.matmul(grad_out, w)  # (..., out) -> (..., in)
        if ctx.needs_input_grad[3]:
            grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0)
        return grad_x, None, None, grad_bias, None


class QuantizedLinear(nn.Module):
    """A frozen linear layer with an int8 / packed-int4 weight and one scale per output row.

    Buffers ``weight`` (int8, ``(out, in * bits / 8)``) and ``weight_scale`` (``(out,)``, the
    compute dtype); ``bias`` is a frozen parameter (or ``None``). Not an ``nn.Linear`` on purpose:
    nothing that expects a float ``weight`` (initialisation, peft's default LoRA layer) mistakes it
    for one. ``in_features`` / ``out_features`` are the logical sizes.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.bits = check_bits(bits)
        if self.bits == 4 and in_features % 2:
            raise ValueError(
                f"4-bit packing needs an even in_features (got {in_features})"
            )
        self.in_features, self.out_features = in_features, out_features
        dtype = dtype or torch.get_default_dtype()
        packed = in_features * self.bits // 8
        self.register_buffer(
            "weight", torch.zeros(out_features, packed, dtype=torch.int8, device=device)
        )
        self.register_buffer(
            "weight_scale", torch.zeros(out_features, dtype=dtype, device=device)
        )
        if bias:
            self.bias = nn.Parameter(
                torch.zeros(out_features, dtype=dtype, device=device),
                requires_grad=False,
            )
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, bits: int, empty: bool = False
    ) -> QuantizedLinear:
        """The quantized version of ``linear`` (on its device; ``empty``: shapes only, nothing computed)."""
        weight = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            bits,
            linear.bias is not None,
            weight.dtype,
            weight.device,
        )
        if not empty:
            layer.set_weight(weight.detach())
            if linear.bias is not None:
                layer.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
        return layer

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the layer computes in (its scale's); peft puts LoRA adapters in it."""
        return self.weight_scale.dtype

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor) -> None:
        """Quantize a float ``(out, in)`` weight into this layer (scale in the weight's dtype)."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(
                f"weight of shape {tuple(weight.shape)} for a {self.out_features}x{self.in_features} layer"
            )
        packed, scale = quantize_weight(weight, self.bits)
        self.weight, self.weight_scale = packed, scale

    def dequantized_weight(self) -> torch.Tensor:
        """The ``(out, in)`` weight forward multiplies by, ``q * scale``, in the compute dtype."""
        return dequantize_weight(self.weight, self.weight_scale, self.bits)

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` holding the dequantized weight and the bias (computes exactly what this layer does)."""
        weight = self.dequantized_weight()
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            self.bias is not None,
            weight.device,
            weight.dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return QuantizedMatmul.apply(
            x, self.weight, self.weight_scale, self.bias, self.bits
        )  # (..., out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, bias={self.bias is not None}"


# --------------------------------------------------------------------------- whole models
def quantizable_layers(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """``(parent, attribute, full name)`` of every layer :func:`quantize` replaces (plain ``nn.Linear``)."""
    found = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, nn.Linear) and QUANTIZED_NAMES.search(name):
                found.append((parent, child_name, name))
    return found


def quantize(model: nn.Module, bits: int, empty: bool = False) -> nn.Module:
    """Replace the model's attention and MLP linear layers by :class:`QuantizedLinear`, in place.

    Each 16/32-bit weight is dropped as soon as its layer is quantized (quantize a model on the
    GPU to do it there). ``empty``: build the quantized layers without computing anything (the
    loader fills them). Sets ``model.config.quantization_bit``. Returns ``model``.
    Raises ``ValueError`` for bits other than 4 / 8 or a model without such layers.
    """
    bits = check_bits(bits)
    layers = quantizable_layers(model)
    if not layers:
        if any(isinstance(m, QuantizedLinear) for m in model.modules()):
            raise ValueError("the model is already quantized")
        raise ValueError(
            "no query_key_value / dense / dense_h_to_4h / dense_4h_to_h layers to quantize"
        )
    for parent, attribute, _ in layers:
        linear = getattr(parent, attribute)
        setattr(
            parent, attribute, QuantizedLinear.from_linear(linear, bits, empty=empty)
        )
        del linear  # the last reference: its weight is freed here
    if getattr(model, "config", None) is not None:
        model.config.quantization_bit = bits
    return model


def dequantize(model: nn.Module) -> nn.Module:
    """Replace every :class:`QuantizedLinear` by an ``nn.Linear`` holding ``q * scale``, in place.

    The model then computes what it computed before, in 16/32 bits (``config.quantization_bit``
    goes back to 0); a LoRA adapter can be merged into it.
    """
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, QuantizedLinear):
                setattr(parent, child_name, child.to_linear())
    if getattr(model, "config", None) is not None:
        model.config.quantization_bit = 0
    return model


def quantization_bits(model: nn.Module) -> int:
    """4 or 8 when the model holds quantized layers, else 0."""
    return next((m.bits for m in model.modules() if isinstance(m, QuantizedLinear)), 0)


def quantized_numel(model: nn.Module) -> int:
    """How many weights the quantized layers stand for (``in * out`` each; they are buffers, not parameters)."""
    return sum(
        m.in_features * m.out_features
        for m in model.modules()
        if isinstance(m, QuantizedLinear)
    )
