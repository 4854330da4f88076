"""What only a GPU can tell: the models on CUDA, the quantization kernels, and the official 6B shapes' memory and speed.

    python benchmarks/bench_gpu.py --out results.json              # on a machine with a GPU
    python benchmarks/bench_gpu.py --device cpu --shape tiny       # the same code, small, on a CPU (a dry run)

Three parts (``--parts``), each printed as it finishes and written to ``--out`` (JSON):

1. **fixtures** -- every reference fixture of ``tests/fixtures`` loaded through
   ``glmlab.load_model`` onto the device: the largest logit difference from the official
   code's in fp32 and in bf16, whether the loss matches, and whether greedy generation gives
   the official ids (fp32).
2. **kernels** -- :mod:`glmlab.quantization` on the device: whether the CUDA extraction kernels
   (NVRTC-compiled, launched through cpm_kernels) load, whether they give bit for bit the torch
   path's dequantized weights (4 and 8 bits; fp16, bf16, fp32), whether a quantized layer's
   output and input gradient equal an ``nn.Linear`` holding those weights, and the time of one
   ChatGLM2-6B MLP weight's dequantization each way.
3. **shapes** -- the original fine-tuning project's settings: a random-weight model of each
   official 6B config (``glmlab.memory.PRESETS``; ``--shape tiny`` shrinks it) in bf16 on the
   device, one card, batch 1 x 1560 tokens by default, gradient checkpointing off and on, for
   ``freeze`` (the last 4 layers), ``ptuning`` (16 prefix tokens) and ``lora`` (rank 8 on
   ``query_key_value``), plus LoRA and P-tuning on a base quantized to 8 and 4 bits
   (``--quantization_bits``). Per row: one training step (forward, backward, AdamW on the
   trained tensors; as DeepSpeed's bf16 optimizer does, AdamW steps fp32 master copies) timed
   ``--steps`` times; the measured peak memory of the step (peak counters reset once the model
   is built and prepared) beside :func:`glmlab.memory.estimate_memory`'s estimate for one GPU,
   ZeRO-0 (the same tensors: weights, gradients, AdamW states, activations, logits), tokens/s,
   and model FLOPs utilisation. ``all`` is left out on purpose: one GPU cannot hold it without
   ZeRO-3 offload (see notebook 05).

Model FLOPs per token (:func:`model_flops_per_token`, counted the way PaLM's appendix B counts
them, for the work each method needs): the forward pass ``2 * N`` for the ``N`` weights of the
matrix multiplications plus ``4 * L * T * h_attn`` for the attention scores and values of ``L``
layers over ``T`` tokens; the backward pass the same again for the input gradients of every
layer above the lowest trained tensor (all layers for LoRA and P-tuning, the last ones for
``freeze``) plus ``2`` per trained weight for the weight gradients. Recomputation under
gradient checkpointing is not counted (that is hardware FLOPs, not model FLOPs). MFU divides
the achieved model FLOPs/s by the card's dense bf16 peak (``--peak_tflops``, else a table of
known cards; unknown: no MFU).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def method_args(method: str, config) -> dict:
    """The original project's settings: the last 4 layers (freeze), 16 prefix tokens (ptuning), rank 8 on the QKV (lora)."""
    last = config.num_layers - 1
    return {
        "freeze": {
            "freeze_module_name": ",".join(
                f"layers.{last - i}." for i in range(min(4, config.num_layers))
            )
        },
        "ptuning": {"pre_seq_len": 16, "prefix_projection": False},
        "lora": {"lora_dim": 8, "lora_module_name": "query_key_value"},
    }[method]


def check_fixtures(device: str) -> list[dict]:
    import glmlab
    from tests.fixture_models import load_fixture, write_fixture_folder

    rows = []
    for path in sorted((REPO / "tests" / "fixtures").glob("*_a*.pt")):
        name = path.stem
        fx = load_fixture(name)
        row = {"fixture": name}
        with tempfile.TemporaryDirectory() as folder:
            write_fixture_folder(name, folder)
            for dtype in (torch.float32, torch.bfloat16):
                model = glmlab.load_model(
                    folder, mode=fx["mode"], dtype=dtype, device=device
                ).eval()
                with torch.no_grad():
                    out = model(
                        input_ids=fx["input_ids"].to(device),
                        labels=fx["labels"].to(device),
                    )
                key = "fp32" if dtype == torch.float32 else "bf16"
                row[f"{key}_max_logit_diff"] = (
                    (out.logits.float().cpu() - fx["logits"]).abs().max().item()
                )
                row[f"{key}_loss_diff"] = abs(
                    out.loss.float().item() - fx["loss"].item()
                )
                if dtype == torch.float32:
                    gen = fx["generate"]
                    kwargs = (
                        {"min_new_tokens": 8}
                        if fx["mode"] == "glm"
                        else {"pad_token_id": 0}
                    )
                    eos = model.config.eos_token_id if fx["mode"] == "glm" else None
                    ids = model.generate(
                        gen["prompt_ids"].to(device),
                        max_new_tokens=8,
                        do_sample=False,
                        eos_token_id=eos,
                        **kwargs,
                    )
                    row["greedy_equal"] = (
                        ids.cpu().tolist() == gen["output_ids"].tolist()
                    )
                del model
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def shape_config(mode: str, shape: str):
    from glmlab.memory import preset_config

    config = preset_config(mode)
    if shape == "tiny":
        config.hidden_size, config.num_layers, config.num_attention_heads = 256, 4, 4
        if mode == "glm":
            config.inner_hidden_size, config.vocab_size = 1024, 1000
            (
                config.mask_token_id,
                config.gmask_token_id,
                config.bos_token_id,
                config.eos_token_id,
            ) = 996, 997, 998, 999
        else:
            config.ffn_hidden_size, config.kv_channels, config.padded_vocab_size = (
                1024,
                64,
                1000,
            )
    return config


def build_model(config, method: str, device: str, bits: int = 0):
    """A random bf16 model of ``config`` on ``device`` (quantized to ``bits`` first), prepared for ``method``."""
    from types import SimpleNamespace

    from glmlab.methods import get_strategy
    from glmlab.models.chatglm import ChatGLMForConditionalGeneration
    from glmlab.models.chatglm2 import ChatGLM2ForConditionalGeneration
    from glmlab.quantization import quantize

    args = SimpleNamespace(
        train_type=method,
        freeze_module_name=None,
        pre_seq_len=None,
        prefix_projection=False,
        lora_dim=8,
        lora_alpha=32,
        lora_dropout=0.0,
        lora_module_name="query_key_value",
    )
    for key, value in method_args(method, config).items():
        setattr(args, key, value)
    strategy = get_strategy(method)
    for key, value in strategy.config_overrides(args).items():
        setattr(config, key, value)
    cls = (
        ChatGLMForConditionalGeneration
        if config.architecture == "glm"
        else ChatGLM2ForConditionalGeneration
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(default)
    if bits:  # as --quantization_bit does before the strategy's prepare; the 16-bit weights are freed
        quantize(model, bits)
    # DeepSpeed's bf16 engine casts the prepared model, LoRA adapters included, to bf16
    return strategy.prepare(model, args).to(torch.bfloat16), args


def batch(
    config, mode: str, batch_size: int, seq_len: int, device: str
) -> dict[str, torch.Tensor]:
    """Random tokens laid out like a training sample: ``[gMASK] <sop>`` (glm) or a plain causal row."""
    vocab = getattr(config, "padded_vocab_size", None) or config.vocab_size
    ids = torch.randint(
        100, min(vocab - 10, 60000), (batch_size, seq_len), device=device
    )
    if mode == "glm":
        ids[:, seq_len // 2 - 2] = config.gmask_token_id
        ids[:, seq_len // 2 - 1] = config.bos_token_id
    labels = ids.clone()
    labels[:, : seq_len // 2] = -100
    return {"input_ids": ids, "labels": labels}


# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) of cards this may run on, matched on the device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "H800": 989.0,
                    "A100": 312.0, "A800": 312.0, "L40S": 362.0, "A40": 149.7, "A10": 125.0, "L4": 121.0,
                    "RTX 4090": 165.2, "RTX 3090": 71.0, "V100": 125.0}  # fmt: skip


def peak_tflops(device: str, override: float | None) -> float | None:
    """The card's dense bf16 peak: ``override``, else the first table entry its name contains, else None."""
    if override:
        return override
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    return next(
        (tflops for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None
    )


def model_flops_per_token(config, method: str, seq_len: int, **args) -> float:
    """Training FLOPs per token that ``method`` needs (see the module docstring)."""
    from glmlab.memory import parameter_shapes, trainable_parameters

    shapes = parameter_shapes(config)
    matmul = {
        n: s for n, s in shapes.items() if len(s) == 2 and "word_embeddings" not in n
    }
    weights = sum(
        a * b for a, b in matmul.values()
    )  # the linear layers and the output layer
    layers = config.num_layers
    attn = (
        config.hidden_size
        if config.architecture == "glm"
        else config.kv_channels * config.num_attention_heads
    )
    forward = 2 * weights + 4 * layers * seq_len * attn
    if (
        method == "freeze"
    ):  # input gradients only from the lowest trained layer up (and the output layer)
        lowest = min(
            int(p.split(".")[1])
            for p in args["freeze_module_name"].split(",")
            if p.startswith("layers.")
        )
        per_layer = (
            2
            * (
                weights
                - sum(a * b for n, (a, b) in matmul.items() if ".layers." not in n)
            )
            / layers
            + 4 * seq_len * attn
        )
        head = 2 * sum(a * b for n, (a, b) in matmul.items() if ".layers." not in n)
        backward_inputs = head + per_layer * (layers - lowest)
    else:
        backward_inputs = forward
    trained, _ = trainable_parameters(config, method, **args)
    return forward + backward_inputs + 2 * trained


def estimate(
    config,
    method: str,
    batch_size: int,
    seq_len: int,
    checkpointing: bool,
    bits: int,
    **args,
):
    """``glmlab.memory.estimate_memory`` for one GPU at ZeRO-0, or None when it cannot count ``bits``."""
    from glmlab.memory import estimate_memory

    accepted = inspect.signature(estimate_memory).parameters
    kwargs = dict(
        precision="bf16",
        zero_stage=0,
        batch_size=batch_size,
        seq_len=seq_len,
        gradient_checkpointing=checkpointing,
        **args,
    )
    if bits:
        if "quantization_bit" not in accepted:
            return None  # an estimator without quantization would overstate the weights
        kwargs["quantization_bit"] = bits
    return estimate_memory(config, method, **kwargs)


def shape_rows(
    mode: str,
    method: str,
    bits: int,
    shape: str,
    device: str,
    batch_size: int,
    seq_len: int,
    steps: int,
    peak: float | None,
) -> list[dict]:
    """One row per checkpointing setting (off, on) of one model, built once."""
    config = shape_config(mode, shape)
    args = method_args(method, config)
    on_gpu = device.startswith("cuda")
    if on_gpu:
        torch.cuda.empty_cache()
    model, _ = build_model(config, method, device, bits)
    model.train()
    # As DeepSpeed's bf16 optimizer: AdamW steps fp32 master copies of the trained tensors.
    trained = [p for p in model.parameters() if p.requires_grad]
    master = [p.detach().float().requires_grad_() for p in trained]
    optimizer = torch.optim.AdamW(master, lr=1e-5)
    data = batch(config, mode, batch_size, seq_len, device)
    flops = model_flops_per_token(shape_config(mode, shape), method, seq_len, **args)
    rows = []
    for checkpointing in (False, True):
        row = {
            "mode": mode,
            "method": method,
            "quantization_bit": bits,
            "checkpointing": checkpointing,
            "batch": batch_size,
            "seq_len": seq_len,
            "args": args,
        }
        if checkpointing:
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        try:
            for _ in range(steps):
                if on_gpu:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                loss = model(**data).loss
                loss.backward()
                for p, m in zip(trained, master):
                    m.grad, p.grad = p.grad.float(), None
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for p, m in zip(trained, master):
                        p.copy_(m)
                if on_gpu:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        except torch.OutOfMemoryError as err:  # a figure too: this setup does not fit
            row["oom"] = str(err)[:200]
            for p in trained:
                p.grad = None
            rows.append(row)
            continue
        measured = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None
        est = estimate(
            shape_config(mode, shape),
            method,
            batch_size,
            seq_len,
            checkpointing,
            bits,
            **args,
        )
        step_s = min(times[1:]) if len(times) > 1 else times[0]
        tokens_per_s = batch_size * seq_len / step_s
        row.update(
            {
                "trainable": sum(p.numel() for p in trained),
                "loss": round(loss.item(), 3),
                "measured_gib": round(measured, 2) if measured is not None else None,
                "estimated_gib": round(est.gpu_gib, 2) if est is not None else None,
                "estimate_over_measured": round(est.gpu_gib / measured, 3)
                if est is not None and measured
                else None,
                "estimate_parts_gib": (
                    {
                        k: round(v, 2)
                        for k, v in est.as_dict().items()
                        if k.endswith("_gib") and k not in ("gpu_gib", "cpu_gib")
                    }
                    if est is not None and hasattr(est, "as_dict")
                    else None
                ),
                "step_s": round(step_s, 3),
                "tokens_per_s": round(tokens_per_s),
                "model_tflops_per_s": round(flops * tokens_per_s / 1e12, 1),
                "mfu": round(flops * tokens_per_s / (peak * 1e12), 3) if peak else None,
            }
        )
        rows.append(row)
    del model, optimizer, master, trained
    return rows


def check_kernels(device: str) -> dict:
    """The quantization kernels against the torch path, and a quantized layer against nn.Linear."""
    from glmlab import quantization as q

    result: dict = {
        "device": device,
        "kernels_loaded": bool(device.startswith("cuda") and q.kernels_available()),
    }
    torch.manual_seed(0)
    cases = []
    for bits in (4, 8):
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            w = torch.randn(96, 256, device=device, dtype=dtype)
            packed, scale = q.quantize_weight(w, bits)
            cpu_packed, _ = q.quantize_weight(w.cpu(), bits)
            fast = q.dequantize_weight(packed, scale, bits)
            slow = q._dequantize_torch(packed, scale, bits)
            layer = q.QuantizedLinear(
                256, 96, bits, bias=True, dtype=dtype, device=device
            )
            layer.weight, layer.weight_scale = packed, scale
            reference = layer.to_linear()
            x = torch.randn(2, 7, 256, device=device, dtype=dtype, requires_grad=True)
            x_ref = x.detach().clone().requires_grad_()
            layer(x).float().square().sum().backward()
            reference(x_ref).float().square().sum().backward()
            cases.append(
                {
                    "bits": bits,
                    "dtype": str(dtype).removeprefix("torch."),
                    "same_packing_as_cpu": bool(torch.equal(packed.cpu(), cpu_packed)),
                    "kernel_equals_torch": bool(torch.equal(fast, slow)),
                    "max_error_over_half_step": float(
                        (
                            (w.float() - slow.float()).abs()
                            / (scale.float()[:, None] / 2)
                        ).max()
                    ),
                    "output_equals_linear": bool(
                        torch.equal(layer(x.detach()), reference(x.detach()))
                    ),
                    "input_grad_equals_linear": bool(torch.equal(x.grad, x_ref.grad)),
                }
            )
    result["cases"] = cases
    if device.startswith(
        "cuda"
    ):  # one ChatGLM2-6B dense_h_to_4h weight (27392 x 4096), int4, fp16
        packed, scale = q.quantize_weight(
            torch.randn(27392, 4096, device=device, dtype=torch.float16), 4
        )
        for name, fn in (
            ("kernel_ms", q.dequantize_weight),
            ("torch_ms", q._dequantize_torch),
        ):
            fn(packed, scale, 4)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(10):
                fn(packed, scale, 4)
            torch.cuda.synchronize()
            result[name] = round((time.perf_counter() - start) * 100, 3)
    return result


def print_table(rows: list[dict]) -> None:
    """The shapes part as a table: measured beside estimated memory, tokens/s and MFU."""
    print(
        f"{'mode':5} {'method':8} {'bits':>4} {'ckpt':>4} {'measured':>9} {'estimate':>9} {'est/meas':>8} "
        f"{'tokens/s':>9} {'MFU':>6}"
    )
    for r in rows:
        if "oom" in r:
            print(
                f"{r['mode']:5} {r['method']:8} {r['quantization_bit']:>4} {str(r['checkpointing'])[0]:>4} "
                f"{'OOM':>9}"
            )
            continue

        def fmt(v, spec):
            return format(v, spec) if v is not None else "n/a"

        print(
            f"{r['mode']:5} {r['method']:8} {r['quantization_bit']:>4} {str(r['checkpointing'])[0]:>4} "
            f"{fmt(r['measured_gib'], '>9.2f')} {fmt(r['estimated_gib'], '>9.2f')} "
            f"{fmt(r['estimate_over_measured'], '>8.3f')} {r['tokens_per_s']:>9} {fmt(r['mfu'], '>6.3f')}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["fixtures", "kernels", "shapes"],
        default=["fixtures", "kernels", "shapes"],
    )
    parser.add_argument("--shape", choices=["6b", "tiny"], default="6b")
    parser.add_argument("--modes", nargs="+", default=["glm2", "glm"])
    parser.add_argument("--methods", nargs="+", default=["freeze", "ptuning", "lora"])
    parser.add_argument(
        "--quantization_bits",
        nargs="+",
        type=int,
        default=[0, 8, 4],
        help="0: 16-bit; 4 / 8: quantized base (lora and ptuning only)",
    )
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--seq_len", type=int, default=1560)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--peak_tflops",
        type=float,
        default=None,
        help="the card's dense bf16 peak, for MFU",
    )
    parser.add_argument(
        "--skip_fixtures",
        action="store_true",
        help="the same as leaving fixtures out of --parts",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    results: dict = {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "torch": torch.__version__,
        "fixtures": [],
        "kernels": None,
        "shapes": [],
    }
    peak = peak_tflops(args.device, args.peak_tflops)
    results["peak_bf16_tflops"] = peak

    def save() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    if "fixtures" in args.parts and not args.skip_fixtures:
        results["fixtures"] = check_fixtures(args.device)
        save()
    if "kernels" in args.parts:
        results["kernels"] = check_kernels(args.device)
        print(json.dumps(results["kernels"]), flush=True)
        save()
    if "shapes" in args.parts:
        for mode in args.modes:
            for bits in args.quantization_bits:
                for method in args.methods:
                    if bits and method not in ("lora", "ptuning"):
                        continue  # freeze and all would train the quantized weights
                    for row in shape_rows(
                        mode,
                        method,
                        bits,
                        args.shape,
                        args.device,
                        args.batch_size,
                        args.seq_len,
                        args.steps,
                        peak,
                    ):
                        print(json.dumps(row), flush=True)
                        results["shapes"].append(row)
                        save()
        print_table(results["shapes"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
