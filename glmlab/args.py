"""Every training flag as one typed dataclass, validated before any model is loaded.

The flag names are the ones of the original ChatGLM fine-tuning commands
(``--train_path --model_name_or_path --mode --train_type --freeze_module_name
--pre_seq_len --prefix_projection --lora_dim ... --ds_file --gradient_checkpointing
--show_loss_step --output_dir``), so existing commands keep working; glmlab adds
``--precision``, ``--eval_path``, ``--resume_from``, ``--max_steps``, ``--max_grad_norm``,
``--save_total_limit``, ``--save_only_model`` and ``--overwrite_output_dir``.

Validation happens in two places, both before DeepSpeed or a model is touched:

* :class:`TrainArgs` ``__post_init__``: types, ranges, choices and that every path exists
  (cheap, no file is read);
* :func:`check_inputs`: reads and validates the sample files and checks that the
  method's targets (freeze patterns, LoRA modules) match names of the checkpoint's
  tensors, read from the weight files' headers without loading a weight.

:func:`parse_args` does both; ``scripts/launch_ds.py`` calls it before it starts the
DeepSpeed launcher, so bad input fails with one line and nothing is written.
Every problem is raised as :class:`ArgsError` (a ``ValueError``) with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from glmlab.constants import MODES, PRECISION_ALIASES, PRECISIONS, TRAIN_TYPES
from glmlab.methods import get_strategy
from glmlab.parsers import ArgsError

# The DeepSpeed configs shipped with glmlab; ``--ds_file`` also accepts these bare names.
CONFIG_DIR = Path(__file__).parent / "configs"


def str2bool(value: str | bool) -> bool:
    """Parse ``true/false``, ``yes/no``, ``1/0``, ``on/off`` (any case) into a bool.

    argparse's ``type=bool`` turns every non-empty string, ``"False"`` included, into
    ``True``; this parser is the fix for ``--prefix_projection False``.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "t", "yes", "y", "1", "on"):
        return True
    if text in ("false", "f", "no", "n", "0", "off"):
        return False
    raise ArgsError(f"expected a boolean (true/false, yes/no, 1/0), got {value!r}")


def resolve_ds_file(ds_file: str) -> Path:
    """The DeepSpeed config file: ``ds_file`` as a path, else a config shipped in ``glmlab/configs``."""
    path = Path(ds_file)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / path.name if path.suffix == ".json" else CONFIG_DIR / f"{path.name}.json"
    if len(path.parts) == 1 and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("ds_*.json")))
    raise ArgsError(f"--ds_file {ds_file}: no such file (shipped configs: {names})")


def _help(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose ``metadata['help']`` becomes the flag's help text."""
    return field(metadata={"help": text, **kwargs.pop("meta", {})}, **kwargs)


@dataclass
class TrainArgs:
    """The arguments of ``python -m glmlab.train`` (every field is a ``--flag`` of the same name)."""

    # --- model and data ---
    model_name_or_path: str = _help("Folder of the base checkpoint (official layout, or one written by glmlab).")
    train_path: str = _help("Training samples: JSON lines or a JSON array (see glmlab.data); several files "
                            "mix, comma-separated, FILE#N taking N samples of FILE per epoch (see glmlab.mixture).")
    output_dir: str = _help("Where checkpoints, metrics.jsonl and TensorBoard events go (created when training starts); "
                            "one run per folder, locked while it trains (see --overwrite_output_dir).")
    mode: str = _help("Model generation and prompt format.", default="glm2", meta={"choices": MODES})
    eval_path: str | None = _help("Optional held-out samples (a mixture, as --train_path); their loss is computed "
                                  "at each epoch end.", default=None)
    max_len: int = _help("Longest training sequence in tokens (prompt + answer + specials).", default=1024)
    max_src_len: int = _help("Longest prompt (source) in tokens; longer prompts are cut.", default=256)
    is_skip: bool = _help("Drop samples that would be cut instead of cutting them.", default=False)

    # --- method ---
    train_type: str = _help("Fine-tuning method.", default="lora", meta={"choices": TRAIN_TYPES})
    freeze_module_name: str = _help(
        "freeze: comma-separated substrings of the parameter names to train, e.g. 'layers.27.,layers.26.' "
        "(a bare number N means 'layers.N.'); everything else is frozen.",
        default="layers.27.",
    )
    pre_seq_len: int = _help("ptuning: number of learnt prefix tokens.", default=16)
    prefix_projection: bool = _help(
        "ptuning: re-parameterise the prefix with a two-layer MLP (true|false).", default=True
    )
    lora_dim: int = _help("lora: rank r of the update.", default=8)
    lora_alpha: int = _help("lora: scaling alpha (the update is scaled by alpha/r).", default=30)
    lora_dropout: float = _help("lora: dropout on the adapter input.", default=0.1)
    lora_module_name: str = _help(
        "lora: comma-separated module names to adapt (peft target_modules), e.g. "
        "'query_key_value,dense_h_to_4h,dense_4h_to_h,dense'.",
        default="query_key_value",
    )
    quantization_bit: int = _help(
        "lora / ptuning: quantize the frozen base's attention and MLP weights to 4 or 8 bits while it loads "
        "(as THUDM's quantize(); glmlab.quantization), for small cards; 0: no quantization. "
        "A THUDM int4/int8 folder is used as it is.",
        default=0,
    )

    # --- optimisation (DeepSpeed applies all of it) ---
    per_device_train_batch_size: int = _help("Micro-batch size per process.", default=16)
    gradient_accumulation_steps: int = _help("Micro-batches per optimizer step and process.", default=1)
    learning_rate: float = _help("Peak learning rate (AdamW).", default=1e-3)
    weight_decay: float = _help("AdamW weight decay (not applied to biases and norm weights).", default=0.1)
    warmup_ratio: float = _help(
        "Share of the optimizer steps spent warming up linearly from 0; the rate then decays linearly to 0.",
        default=0.1,
    )
    max_grad_norm: float = _help("Clip the global gradient norm to this (0 disables clipping).", default=1.0)
    num_train_epochs: int = _help("Passes over the training data.", default=1)
    max_steps: int | None = _help(
        "Stop after this many optimizer steps (a checkpoint is saved there). The learning-rate schedule is "
        "still planned for num_train_epochs, so the stopped run can be resumed exactly with --resume_from.",
        default=None,
    )
    precision: str | None = _help(
        "Training precision. Default: bf16 on a GPU that supports it, else fp32 (fp16 needs a GPU).",
        default=None,
        meta={"choices": PRECISIONS + tuple(PRECISION_ALIASES)},
    )
    seed: int = _help("Seed of every random generator (data order, initialisation, dropout).", default=1234)

    # --- DeepSpeed and memory ---
    ds_file: str = _help(
        "DeepSpeed config with the ZeRO/offload settings: a path or a shipped name "
        "(ds_zero2_no_offload.json, ds_zero2_offload.json, ds_zero3_no_offload.json, ds_zero3_offload.json; "
        "ds_zero1_no_offload.json for --pipeline_stages).",
        default="ds_zero2_no_offload.json",
    )
    gradient_checkpointing: bool = _help("Recompute activations in the backward pass to save memory.", default=False)
    pipeline_stages: int | None = _help(
        "--train_type all: split the model's layers into N pipeline stages (DeepSpeed's pipeline engine, "
        "glmlab.pipeline); the processes are N stages x data-parallel replicas. Needs ZeRO stage 0 or 1 "
        "(--ds_file ds_zero1_no_offload.json). Default: no pipeline.",
        default=None,
    )
    local_rank: int = _help("Set by the DeepSpeed launcher; ignored otherwise.", default=-1)

    # --- logging and checkpoints ---
    show_loss_step: int = _help("Log loss, lr, tokens/s and memory every N optimizer steps.", default=10)
    save_model_step: int | None = _help("Also save a checkpoint every N optimizer steps (one is saved every epoch).", default=None)
    resume_from: str | None = _help(
        "A checkpoint folder (output_dir/epoch-E-step-S) to continue from: weights, optimizer, scheduler, "
        "step counter, data position and random state.",
        default=None,
    )
    save_total_limit: int | None = _help(
        "Keep DeepSpeed's state (optimizer, ZeRO partitions: what --resume_from needs, often several times "
        "the weights) only in the newest K checkpoints; older ones keep their weights or adapter, for "
        "inference. Pruned only once the new checkpoint is completely written. Default: keep every state.",
        default=None,
    )
    overwrite_output_dir: bool = _help(
        "Start afresh in an --output_dir that holds another run's checkpoints, metrics or events: they are "
        "deleted once every check has passed and the model has loaded. Without it such a folder is refused "
        "(one run per folder; --resume_from continues the run it holds).",
        default=False,
    )
    save_only_model: bool = _help(
        "Write only the weights or adapter in each checkpoint, no DeepSpeed state at all "
        "(the smallest checkpoints; --resume_from cannot continue from them).",
        default=False,
    )

    def __post_init__(self) -> None:
        for name, value in (("mode", self.mode), ("train_type", self.train_type)):
            choices = MODES if name == "mode" else TRAIN_TYPES
            if value not in choices:
                raise ArgsError(f"--{name} must be one of {', '.join(choices)} (got {value!r})")
        if self.precision is not None:  # the long names are aliases: bfloat16 -> bf16
            self.precision = PRECISION_ALIASES.get(self.precision, self.precision)
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ArgsError(f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        positive = ("per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_len",
                    "max_src_len", "show_loss_step", "pre_seq_len", "lora_dim", "lora_alpha")
        for name in positive:
            if getattr(self, name) < 1:
                raise ArgsError(f"--{name} must be at least 1 (got {getattr(self, name)})")
        for name in ("max_steps", "save_model_step", "save_total_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ArgsError(f"--{name} must be at least 1 (got {getattr(self, name)})")
        if not self.learning_rate > 0:
            raise ArgsError(f"--learning_rate must be > 0 (got {self.learning_rate})")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ArgsError("--weight_decay and --max_grad_norm must be >= 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ArgsError(f"--warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        if not 0 <= self.lora_dropout < 1:
            raise ArgsError(f"--lora_dropout must be in [0, 1) (got {self.lora_dropout})")
        if self.quantization_bit not in (0, 4, 8):
            raise ArgsError(f"--quantization_bit must be 4 or 8 (or 0: none), got {self.quantization_bit}")
        if self.quantization_bit and not get_strategy(self.train_type).quantizable:
            raise ArgsError(f"--quantization_bit {self.quantization_bit} works with --train_type lora or ptuning only "
                            f"({self.train_type} would train the quantized weights)")
        from glmlab.data import check_lengths

        try:
            check_lengths(self.mode, self.max_len, self.max_src_len)
        except ValueError as err:
            raise ArgsError(str(err)) from None
        self._check_paths()
        if self.pipeline_stages is not None:
            self._check_pipeline()
        if self.precision == "fp16" and not _cuda_available():
            raise ArgsError("--precision fp16 needs a GPU (DeepSpeed refuses fp16 on the CPU); use bf16 or fp32")

    def _check_paths(self) -> None:
        model = Path(self.model_name_or_path)
        if not model.is_dir():
            raise ArgsError(f"--model_name_or_path {self.model_name_or_path}: no such folder")
        if not (model / "config.json").is_file():
            raise ArgsError(f"--model_name_or_path {self.model_name_or_path}: no config.json (not a model folder)")
        from glmlab.data import DataError
        from glmlab.mixture import parse_spec

        for name in ("train_path", "eval_path"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_spec(value)  # FILE or FILE#N, comma-separated; every file exists
                except DataError as err:
                    raise ArgsError(f"--{name} {err}") from None
        ds_path = resolve_ds_file(self.ds_file)
        try:
            ds_config = json.loads(ds_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ArgsError(f"--ds_file {ds_path}: not valid JSON ({err})") from None
        if not isinstance(ds_config, dict):
            raise ArgsError(f"--ds_file {ds_path}: expected a JSON object")
        if self.resume_from is not None:
            from glmlab.checkpoint import resume_problem

            problem = resume_problem(self.resume_from)
            if problem:
                raise ArgsError(f"--resume_from {problem}")

    def _check_pipeline(self) -> None:
        """The combinations DeepSpeed's pipeline engine (or glmlab's pipeline path) cannot run, one line each."""
        n = self.pipeline_stages
        if n < 1:
            raise ArgsError(f"--pipeline_stages must be at least 1 (got {n})")
        if not get_strategy(self.train_type).pipelines:
            raise ArgsError(f"--pipeline_stages works with --train_type all only (got {self.train_type}: "
                            f"its frozen weights or adapters are not split into stages)")
        ds_path = resolve_ds_file(self.ds_file)
        try:
            zero = json.loads(ds_path.read_text(encoding="utf-8")).get("zero_optimization", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            return  # _check_paths names the bad file
        stage = zero.get("stage", 0)
        if stage not in (0, 1):
            raise ArgsError(f"--pipeline_stages: DeepSpeed's pipeline engine takes ZeRO stage 0 or 1, "
                            f"--ds_file {ds_path.name} sets stage {stage} (use --ds_file ds_zero1_no_offload.json)")
        offloaded = [k for k in ("offload_optimizer", "offload_param")
                     if str(zero.get(k, {}).get("device", "none")).lower() not in ("none", "")]
        if offloaded:
            raise ArgsError(f"--pipeline_stages: --ds_file {ds_path.name} offloads to the CPU, which glmlab's pipeline "
                            f"path does not support")
        layers = _num_layers(Path(self.model_name_or_path))
        if layers is not None and n > layers:
            raise ArgsError(f"--pipeline_stages {n}: more stages than the {layers} layers of {self.model_name_or_path}")
        world = os.environ.get("GLMLAB_WORLD_SIZE") or os.environ.get("WORLD_SIZE")  # launch_ds.py / the launcher
        if world and int(world) % n:
            raise ArgsError(f"--pipeline_stages {n} does not divide the {world} processes "
                            f"(stages x data-parallel replicas = processes)")

    @property
    def ds_path(self) -> Path:
        """The resolved ``--ds_file``."""
        return resolve_ds_file(self.ds_file)


def _num_layers(model: Path) -> int | None:
    """``num_layers`` of a model folder's ``config.json`` (None when unreadable: the path checks report it)."""
    try:
        return int(json.loads((model / "config.json").read_text(encoding="utf-8"))["num_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cuda_available() -> bool:
    if os.environ.get("DS_ACCELERATOR", "").lower() == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def default_precision() -> str:
    """bf16 on a GPU that supports it, else fp32."""
    if _cuda_available():
        import torch

        if torch.cuda.is_bf16_supported():
            return "bf16"
    return "fp32"


class _ArgsErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), raised as :class:`ArgsError`."""

    def error(self, message: str):  # type: ignore[override]
        raise ArgsError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser generated from :class:`TrainArgs` (help from each field's metadata)."""
    parser = _ArgsErrorParser(prog="python -m glmlab.train", description=TrainArgs.__doc__,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(TrainArgs):
        kwargs: dict[str, Any] = {"help": f.metadata["help"], "dest": f.name}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if f.default is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if kind.startswith("bool"):
            # `--flag` alone means true (as the original store_true flags); `--flag false` also works.
            kwargs.update(type=str2bool, nargs="?", const=True, metavar="BOOL")
        elif kind.startswith("int"):
            kwargs["type"] = int
        elif kind.startswith("float"):
            kwargs["type"] = float
        else:
            kwargs["type"] = str
        parser.add_argument(f"--{f.name}", **kwargs)
    return parser


def parse_args(argv: Sequence[str] | None = None, check: bool = True) -> TrainArgs:
    """Parse and validate the command line; with ``check`` also validate the inputs (:func:`check_inputs`).

    Raises :class:`ArgsError` with a one-line message; nothing is written.
    """
    namespace = build_parser().parse_args(argv)  # --help exits here
    args = TrainArgs(**vars(namespace))
    if check:
        check_inputs(args)
    return args


def check_inputs(args: TrainArgs) -> None:
    """Validate what the flags point at, without loading a model.

    Checks that the checkpoint is of the generation ``--mode`` names, reads every sample
    file (a malformed line or a missing field names the file and line; conversations need
    ``--mode glm3``), checks that the method's targets match the checkpoint's tensor names
    and that ``--output_dir`` holds no other run's files (:func:`glmlab.run_folder.check_output_dir`).
    """
    from glmlab.data import DataError
    from glmlab.loading import build_config
    from glmlab.methods import checkpoint_parameter_names
    from glmlab.mixture import validate_spec

    try:
        build_config(args.model_name_or_path, args.mode)
    except ValueError as err:  # CheckpointError included
        raise ArgsError(f"--model_name_or_path: {err}") from None

    for name in ("train_path", "eval_path"):
        path = getattr(args, name)
        if path is None:
            continue
        try:
            validate_spec(path, args.mode)  # every file of the mixture, every sample
        except (DataError, ValueError, OSError) as err:
            raise ArgsError(f"--{name}: {err}") from None
    try:
        names = checkpoint_parameter_names(args.model_name_or_path)
        get_strategy(args.train_type).check(args, names)
    except ArgsError:
        raise
    except ValueError as err:
        raise ArgsError(str(err)) from None
    from glmlab.run_folder import check_output_dir

    check_output_dir(args)  # one run per folder (glmlab.run_folder); reads only


def to_argv(args: TrainArgs) -> list[str]:
    """The command line that parses back into ``args`` (flags left at their defaults are omitted)."""
    argv: list[str] = []
    for f in fields(TrainArgs):
        value = getattr(args, f.name)
        if f.default is not MISSING and value == f.default:
            continue
        argv += [f"--{f.name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv
