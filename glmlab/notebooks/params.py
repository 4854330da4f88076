"""The setup cell of notebooks 02-05, as one call: read the parameters, check them all, build the :class:`Setup`.

A notebook's first cell holds its parameters (papermill's ``parameters`` tag); the setup cell is::

    setup, config = params.start(globals())
    runs = {"lora": {"train_type": "lora", "lora_dim": lora_dim, ...}}
    params.check_runs(setup, runs)

Bad parameters stop that cell with one line naming the parameter, before any model is scored or trained:
each run's flags are checked as ``glmlab train`` checks them (:class:`~glmlab.args.TrainArgs`, then
:func:`~glmlab.args.check_inputs`: the data files line by line, the method's targets against the model's
tensor names), and the test file is read as prediction reads it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from glmlab.notebooks.experiment import LEARNING_RATES, Setup, default_learning_rate
from glmlab.notebooks.parameters import RULES, ParameterError, check_parameters

__all__ = ["ParameterError", "check_pipeline", "check_runs", "start"]


def _as_parameter(message: str) -> str:
    """``--lora_dim must be ...`` -> ``lora_dim must be ...``: the notebook's names, not the command line's."""
    return re.sub(r"--(\w+)", r"\1", message)


def start(params: Mapping[str, Any]) -> tuple[Setup, Any]:
    """The :class:`Setup` of a notebook's parameters (``globals()`` after the parameters cell) and the base's config.

    Paths are made absolute (:func:`glmlab.notebooks.absolute`), ``model_dir`` is resolved
    (:func:`~glmlab.notebooks.experiment.resolve_base`: ``None`` is the shipped small base of ``mode``), the
    default data sets are written once into the cache. Raises :class:`ParameterError` (one line) on a bad value.
    """
    from glmlab.loading import build_config
    from glmlab.notebooks import absolute, experiment

    check_parameters(**{name: value for name, value in params.items() if name in RULES and name != "runs"})  # by name
    names = [f.name for f in fields(Setup) if f.name in params]
    values = {name: params[name] for name in names}
    value = values.get("max_test_samples")  # None: all of them
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ParameterError(f"parameter max_test_samples: must be a positive integer or None, got {value!r}")
    output_dir = absolute(values["output_dir"])
    try:
        model_dir = experiment.resolve_base(values.get("model_dir"), values["mode"], output_dir)
        config, mode = build_config(model_dir, values["mode"])
    except (OSError, ValueError) as err:
        raise ParameterError(f"model_dir {values.get('model_dir')!r}: {str(err).splitlines()[0]}") from None
    data = {name: absolute(values[name]) if values.get(name) else str(experiment.data_path(default))
            for name, default in (("train_path", "spo_train"), ("test_path", "spo_test"))}
    setup = Setup(**{**values, "model_dir": str(model_dir), "mode": mode, "output_dir": output_dir, **data})
    _check_test_file(setup)
    print(f"{_describe(model_dir, mode, config)}; training on {'GPU' if experiment.on_gpu() else 'CPU'}")
    return setup, config


def _describe(model_dir: Path, mode: str, config) -> str:
    from glmlab import memory

    return (f"{model_dir}: {mode}, {config.num_layers} layers, hidden {config.hidden_size}, "
            f"{memory.parameter_count(config):,} parameters")


def _check_test_file(setup: Setup) -> None:
    from glmlab.data import DataError, read_samples

    try:
        samples = read_samples(setup.test_path, references=True)
    except (DataError, ValueError, OSError) as err:
        raise ParameterError(f"test_path: {str(err).splitlines()[0]}") from None
    if not samples:
        raise ParameterError(f"test_path: {setup.test_path}: no samples")


def check_runs(setup: Setup, runs: Mapping[str, Mapping[str, Any]]) -> None:
    """Check every run's flags (label -> method flags, as :func:`~glmlab.notebooks.experiment.run_method` takes
    them) as ``glmlab train`` would, before anything loads; :class:`ParameterError` names the first bad one."""
    from glmlab.args import ArgsError, TrainArgs, check_inputs

    for label, method_flags in runs.items():
        flags = {**setup.flags(), **method_flags, "output_dir": str(Path(setup.output_dir) / label),
                 "overwrite_output_dir": True}
        flags.setdefault("learning_rate", default_learning_rate(flags) if flags.get("train_type") in LEARNING_RATES else 1.0)
        try:
            check_inputs(TrainArgs(**flags))
        except ArgsError as err:
            raise ParameterError(_as_parameter(str(err))) from None
        except TypeError as err:  # a flag TrainArgs does not know
            raise ParameterError(f"{label}: {err}") from None


def check_pipeline(nproc: int, pipeline_stages: int, pipeline_max_steps: int) -> None:
    """Notebook 05's pipeline run: ``pipeline_stages`` must divide ``nproc`` (stages x replicas = processes)."""
    for name, value in (("pipeline_stages", pipeline_stages), ("pipeline_max_steps", pipeline_max_steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ParameterError(f"{name} must be a whole number of at least 1 (got {value!r})")
    if nproc % pipeline_stages:
        raise ParameterError(f"pipeline_stages {pipeline_stages} does not divide nproc {nproc} "
                             f"(stages x data-parallel replicas = processes)")
