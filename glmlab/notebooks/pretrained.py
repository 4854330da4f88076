"""Small pretrained ChatGLM bases, one per generation, that know something before they are fine-tuned.

    python -m glmlab.notebooks.pretrained --mode glm2 --output_dir runs/base-glm2   # rebuild one (minutes)
    python -m glmlab.notebooks.pretrained --mode glm2 --probe                        # score the shipped one

A random tiny model can show the mechanics of fine-tuning, not its results: it has nothing to
forget and learns a task's format long before its content. These bases are ChatGLM models in
the official layout (``config.json``, fp16 ``model.safetensors``, the SentencePiece vocabulary
under its official name), about 1.2M parameters (hidden 128, 4 layers), trained by glmlab's own
loop (``python -m glmlab.train --train_type all``) on the general corpus of
:mod:`glmlab.synth`: seven skills whose answers are checked by exact match (copy, reverse,
sort, arithmetic, knowledge of the car-repair world, word translation, a code-like lookup).
The corpus holds neither fine-tuning task, so a base knows the words and the world but not
triple extraction or question writing.

They ship in ``glmlab/assets/base/<mode>`` with their training log (``train_log.jsonl``) and
their held-out probe scores (``probes.json``); :func:`base_model_dir` is where the notebooks,
the tests and the quickstart find them. A rebuild is deterministic for a given torch build
and thread count (the recipe is :data:`RECIPE`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from glmlab.constants import MODES

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "base"
# Model sizes and training flags of the shipped bases.
SIZES = {"hidden_size": 128, "num_layers": 4, "num_attention_heads": 4, "ffn_hidden_size": 384}
RECIPE = {
    "train_type": "all", "max_len": 160, "max_src_len": 96, "per_device_train_batch_size": 32,
    "learning_rate": 3e-3, "num_train_epochs": 16, "warmup_ratio": 0.03, "weight_decay": 0.01,
    "precision": "fp32", "seed": 0, "show_loss_step": 50, "max_grad_norm": 1.0,
}  # fmt: skip
CORPUS = {"n_per_skill": 1500, "n_probe": 40, "seed": 0}
PROBE_FILE = "probes.json"
LOG_FILE = "train_log.jsonl"


def base_model_dir(mode: str) -> Path:
    """The shipped pretrained base of ``mode``; raises ``FileNotFoundError`` naming the rebuild command."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    folder = ASSETS / mode
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no pretrained base; build it with "
                                f"python -m glmlab.notebooks.pretrained --mode {mode} --output_dir {folder}")
    return folder


def probe_scores(model, tokenizer, mode: str, probes: list[dict], batch_size: int = 16) -> dict:
    """Exact-match accuracy on held-out probes, per skill and over all: ``{"overall", "skills", "n"}``.

    Answers are generated greedily from the prompt built as in training. Small batches are faster
    on a CPU: a batch generates until its longest answer ends (16: 8 s for the 280 probes of a base,
    64: 22 s).
    """
    from glmlab.metrics import exact_match
    from glmlab.predict import predict_samples

    answers = predict_samples(model, tokenizer, mode, probes, max_src_len=RECIPE["max_src_len"],
                              batch_size=batch_size, max_new_tokens=RECIPE["max_len"] - RECIPE["max_src_len"])
    skills: dict[str, list[int]] = {}
    for probe, answer in zip(probes, answers):
        skills.setdefault(probe["skill"], []).append(exact_match([answer], [probe["output"]]))
    per_skill = {skill: sum(hits) / len(hits) for skill, hits in skills.items()}
    return {"overall": sum(map(sum, skills.values())) / len(probes), "skills": per_skill, "n": len(probes),
            "answers": answers}


def general_probes() -> list[dict]:
    """The held-out general probes (the same every time)."""
    from glmlab.synth import general_corpus

    return general_corpus(CORPUS["n_per_skill"], CORPUS["n_probe"], CORPUS["seed"])[1]


def build(mode: str, output_dir: str | Path, max_steps: int | None = None, threads: int = 2, words: str = "parts",
          seed: int | None = None) -> dict:
    """Pretrain the base of ``mode`` into ``output_dir`` (must not exist or be empty); returns its probe scores.
    ``words``: the corpus's word pool (:func:`glmlab.synth.word_pool`; the shipped bases: ``parts``).
    ``seed``: the build's seed (initial weights and the order of the corpus; the corpus itself stays the same);
    default :data:`RECIPE`'s, that of the shipped bases. Two seeds tell a property of a corpus from one build's luck."""
    import torch

    from glmlab.inference import load_for_inference
    from glmlab.loading import write_weights
    from glmlab.json_files import write_jsonl
    from glmlab.synth import general_corpus
    from glmlab.tiny import make_tiny

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"--output_dir {output_dir} is not empty")
    work = Path(tempfile.mkdtemp(prefix=f"glmlab-base-{mode}-"))
    try:
        corpus = {**CORPUS, **({"words": words} if words != "parts" else {})}
        train, probes = general_corpus(**corpus)
        write_jsonl(work / "general_train.jsonl", train)
        recipe = {**RECIPE, **({"seed": seed} if seed is not None else {})}
        init = make_tiny(mode, work / "init", seed=recipe["seed"], **SIZES)
        flags = {**recipe, "mode": mode, "model_name_or_path": init, "train_path": work / "general_train.jsonl",
                 "output_dir": work / "run"}
        if max_steps:
            flags["max_steps"] = max_steps
        argv = [item for key, value in flags.items() for item in (f"--{key}", str(value))]
        env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        print("$ python -m glmlab.train", " ".join(argv), flush=True)
        subprocess.run([sys.executable, "-m", "glmlab.train", *argv], env=env, check=True)

        from glmlab.checkpoint import latest_checkpoint

        checkpoint = latest_checkpoint(work / "run")
        model, tokenizer, _ = load_for_inference(checkpoint, mode=mode)
        torch.set_num_threads(threads)
        scores = probe_scores(model, tokenizer, mode, probes)

        staging = output_dir.with_name(f".{output_dir.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("config.json", "tokenizer_config.json", "ice_text.model", "tokenizer.model"):
            if (checkpoint / name).is_file():
                shutil.copy(checkpoint / name, staging / name)
        config = json.loads((staging / "config.json").read_text(encoding="utf-8"))
        config.update(dtype="float16", torch_dtype="float16")
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        write_weights({k: v.half() for k, v in model.state_dict().items()}, staging, "safetensors")
        log = work / "run" / "metrics.jsonl"
        (staging / LOG_FILE).write_text(log.read_text(encoding="utf-8") if log.is_file() else "", encoding="utf-8")
        record = {"mode": mode, "sizes": SIZES, "recipe": recipe, "corpus": corpus, "torch": torch.__version__,
                  "threads": threads,  # the rebuild is deterministic for a torch build and thread count
                  "overall": scores["overall"], "skills": scores["skills"], "n": scores["n"],
                  "command": f"python -m glmlab.notebooks.pretrained --mode {mode} --threads {threads} --words {words}"
                              + (f" --seed {seed}" if seed is not None else "") + " --output_dir OUT"}
        (staging / PROBE_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        if output_dir.exists():
            output_dir.rmdir()
        staging.rename(output_dir)
        return scores
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from glmlab.parsers import OneLineParser
    from glmlab.synth import WORD_POOLS

    parser = OneLineParser(prog="python -m glmlab.notebooks.pretrained", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", required=True, choices=MODES, help="which generation")
    parser.add_argument("--output_dir", help="rebuild the base into this (new or empty) folder")
    parser.add_argument("--probe", action="store_true", help="score the shipped base (or --output_dir) on its probes")
    parser.add_argument("--max_steps", type=int, help="stop pretraining early (a quick check of the recipe)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--words", default="parts", choices=WORD_POOLS,
                        help="the corpus's word pool (glmlab.synth.word_pool); the shipped bases: parts")
    parser.add_argument("--seed", type=int, help=f"the build's seed: initial weights and corpus order "
                                                 f"(default {RECIPE['seed']}, the shipped bases')")
    args = parser.parse_args(argv)
    if not args.output_dir and not args.probe:
        parser.error("pass --output_dir (rebuild) or --probe (score)")
    if args.output_dir and not args.probe:
        try:
            scores = build(args.mode, args.output_dir, args.max_steps, args.threads, args.words, args.seed)
        except ValueError as err:
            parser.error(str(err))
    else:
        import torch

        from glmlab.inference import load_for_inference

        torch.set_num_threads(args.threads)
        folder = Path(args.output_dir) if args.output_dir else base_model_dir(args.mode)
        model, tokenizer, mode = load_for_inference(folder, mode=args.mode)
        scores = probe_scores(model, tokenizer, mode, general_probes())
    skills = ", ".join(f"{k} {v:.2f}" for k, v in scores["skills"].items())
    print(json.dumps({"probe_accuracy": round(scores["overall"], 4)}), f"({skills})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
