#!/usr/bin/env python
"""Start ``glmlab.train`` on N processes (the ``deepspeed`` launcher on GPUs), after checking the training arguments.

    python scripts/launch_ds.py --gpus 0,1,2,3 -- --train_path data/spo_train.jsonl --model_name_or_path ChatGLM2-6B ...
    python scripts/launch_ds.py --cpu 2 -- --train_path ... --precision fp32

The documented entry of a checkout; the code is :mod:`glmlab.launch`, which an installed glmlab
runs as ``glmlab launch`` (same flags). ``--help`` lists them; everything after ``--`` goes to
``python -m glmlab.train``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's glmlab, installed or not

from glmlab.launch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
