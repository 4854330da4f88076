"""glmlab's main job as one function: what ``bash scripts/quickstart.sh`` runs after setting up ``.venv``.

    python -m glmlab.notebooks.quickstart --output_dir runs/quickstart

1. write the synthetic data (:mod:`glmlab.synth`) into ``output_dir/data``;
2. score the small pretrained ChatGLM-6B base glmlab ships on its held-out general probes (it knows
   something before it is fine-tuned) and on the held-out triple-extraction records (it does not know
   the task: F1 0.0);
3. fine-tune it with LoRA on triple extraction through ``glmlab launch`` (``scripts/launch_ds.py``): two
   DeepSpeed processes on the CPU, or the first two GPUs;
4. predict the held-out records (unseen part/fault pairs, an unseen sentence form), print a few and
   the score line, and write everything to ``output_dir/quickstart.json``.

Steps 3 and 4 are :func:`glmlab.notebooks.experiment.run_method` with notebook 04's default settings
(:func:`setup` and :func:`lora_flags` are those defaults, and ``tests/test_published.py`` checks that
they stay so): the quickstart's LoRA run *is* notebook 04's, which is how the test suite asserts the
quickstart's F1 against its floor without training it a second time (``tests/published.py``).
The same steps, with an official checkpoint folder, fine-tune the 6B models (see the notebooks).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from glmlab.notebooks import experiment

MODE = "glm"  # the ChatGLM-6B base: the best reader of the three small bases
EPOCHS = 3  # the notebooks' step budget: 3 epochs of 125 optimizer steps of 16 samples


def setup(output_dir: str | Path, data_dir: str | Path) -> experiment.Setup:
    """The quickstart's shared settings: notebook 04's defaults, on the data in ``data_dir``."""
    data_dir = Path(data_dir)
    return experiment.Setup(model_dir=str(experiment.resolve_base(None, MODE)), mode=MODE,
                            train_path=str(data_dir / "spo_train.jsonl"), test_path=str(data_dir / "spo_test.jsonl"),
                            output_dir=str(output_dir), num_train_epochs=EPOCHS)


def lora_flags() -> dict[str, Any]:
    """The quickstart's LoRA flags: the study's (rank :data:`~glmlab.notebooks.experiment.LORA_DIM` on every
    linear layer, alpha four times the rank, no dropout) at LoRA's documented rate
    (:data:`glmlab.notebooks.experiment.LEARNING_RATES`)."""
    return {**experiment.study_methods(0)["lora"], "learning_rate": experiment.LEARNING_RATES["lora"]}


def run(output_dir: str | Path, examples: int = 3) -> dict[str, Any]:
    """Run the quickstart into ``output_dir``; print what it measures; return (and write to
    ``output_dir/quickstart.json``) the base's scores and the LoRA run's row."""
    from glmlab import synth
    from glmlab.notebooks import plots

    out = Path(output_dir)
    print("== 1. data, and what the pretrained base knows", flush=True)
    for name, path in synth.write_all(out / "data").items():
        print(f"{path}: {sum(1 for _ in path.open(encoding='utf-8'))} samples")
    shared = setup(out, out / "data")
    base = experiment.base_row(shared, probes=experiment.general_probes())
    skills = ", ".join(f"{k} {v:.2f}" for k, v in base["skills"].items() if k != "overall")
    print(f"the base before fine-tuning: general probes {base['skills']['overall']:.2f} ({skills}); "
          f"held-out triple F1 {base['f1']:.3f}: it knows the words, not the task", flush=True)

    print("== 2. LoRA fine-tune of the pretrained ChatGLM-6B base, two DeepSpeed processes", flush=True)
    row = experiment.run_method("lora", lora_flags(), shared)
    _, losses = plots.loss_curve(row["run_dir"])
    print(f"loss over the run: {losses[0]:.2f} -> {losses[-1]:.3f} in {row['steps']} optimizer steps "
          f"({len(losses)} logged windows)")

    print("== 3. predictions on the held-out records", flush=True)
    rows = [json.loads(line) for line in Path(row["predictions"]).read_text(encoding="utf-8").splitlines()]
    for sample in rows[:examples]:
        print(f"input:      {sample['input']}\nreference:  {sample['output']!r}\nprediction: {sample['prediction']!r}\n")
    print(json.dumps(row["scores"], ensure_ascii=False))
    print(f"{len(rows)} predictions written to {row['predictions']}; held-out triple F1 {row['f1']:.3f} "
          f"(the base: {base['f1']:.3f})")
    summary = {"setup": asdict(shared), "flags": lora_flags(), "base": {k: v for k, v in base.items() if k != "predictions"},
               "lora": row}
    (out / "quickstart.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n",
                                         encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    from glmlab.parsers import OneLineParser

    parser = OneLineParser(prog="python -m glmlab.notebooks.quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="runs/quickstart", help="where the data, the run and its scores go")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the figures in the README were measured so
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # prediction runs here, training in the launched job
    run(args.output_dir)
    print(f"Talk to it: python -m glmlab.predict --checkpoint {Path(args.output_dir) / 'lora'} --chat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
