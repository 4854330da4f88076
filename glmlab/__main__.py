"""The ``glmlab`` command: ``glmlab SUBCOMMAND [flags]`` (``python -m glmlab`` is the same).

    glmlab launch --cpu 2 -- --train_path data/spo_train.jsonl --model_name_or_path MODEL --train_type lora ...
    glmlab predict --checkpoint runs/lora --test_path data/spo_test.jsonl --output_path predictions.jsonl
    glmlab memory --mode glm2 --train_type lora --max_len 1560
    glmlab train --help

Each subcommand is the command line of one module, with the same flags as ``python -m glmlab.X``
(``glmlab SUBCOMMAND --help`` lists them); this module only dispatches.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Sequence

# subcommand -> (module whose main() runs it, flags put in front of the user's, one-line summary)
COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "train": ("glmlab.train", (), "fine-tune in this process (one process, or one rank under a launcher)"),
    "launch": ("glmlab.launch", (), "check the training flags, then train on N processes (--cpu N, or GPUs under the deepspeed launcher)"),
    "predict": ("glmlab.predict", (), "generate for a test file with any checkpoint, and score it"),
    "chat": ("glmlab.predict", ("--chat",), "talk to any checkpoint on the terminal (predict --chat)"),
    "merge-lora": ("glmlab.merge_lora", (), "fold a LoRA adapter into its base: a plain model folder"),
    "memory": ("glmlab.memory.cli", (), "estimate the training memory per GPU of a method and ZeRO setting"),
    "synth": ("glmlab.synth", (), "write the synthetic data sets the notebooks use"),
    "tiny": ("glmlab.tiny", (), "write a tiny random checkpoint in the official layout"),
}
PROG = "glmlab"


def usage() -> str:
    """The command's help: its subcommands and what each does."""
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} SUBCOMMAND [flags]   ({PROG} SUBCOMMAND --help: its flags)", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, _, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the subcommand ``argv[0]`` with the rest of ``argv``; its exit status is the command's."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{PROG}: error: unknown subcommand {name!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module, front, _ = COMMANDS[name]
    run = importlib.import_module(module).main
    named = {"prog": f"{PROG} {name}"} if "prog" in inspect.signature(run).parameters else {}
    return run([*front, *rest], **named) or 0


if __name__ == "__main__":
    sys.exit(main())
