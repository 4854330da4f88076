"""Choose the notebooks' base generation on the validation split, from one validation sweep per base.

    python benchmarks/sweep_valid.py --mode glm2 --grid lora=5e-3,1e-2 zero3=1e-3 --seeds 1234 2 3 \\
        --output benchmarks/results/sweep_valid_glm2.json         # and the same with glm3 (~15 min each, 2 cores)
    python benchmarks/choose_base.py benchmarks/results/sweep_valid.json \\
        benchmarks/results/sweep_valid_glm2.json benchmarks/results/sweep_valid_glm3.json

Each file is a ``benchmarks/sweep_valid.py`` output for one base (glm's is the sweep that chose the rates).
Only what every file ran is compared: the same methods, rates, step budget and seeds. Per base, each
method scores its best rate's mean validation F1 over those seeds; the chosen base has the best mean over
the methods (a tie goes to the order given). The test split is never read. Prints the table it chose from
and writes it to ``--output`` (committed: ``benchmarks/results/base_choice.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))  # bench_methods, however this file is loaded

from bench_methods import SAME_MACHINE, same_machine  # noqa: E402


def compare(sweeps: list[dict]) -> dict:
    """The comparison over the settings every sweep ran: per base, per method, its best rate's mean F1."""
    modes = [s["mode"] for s in sweeps]
    if len(set(modes)) != len(modes):
        raise SystemExit(f"choose_base.py: one sweep per base, got modes {modes}")
    # the bases' numerics depend on the CPU's kernels: figures of two machines are not comparable
    if not all(same_machine(sweeps[0].get("machine"), s.get("machine")) for s in sweeps):
        raise SystemExit("choose_base.py: the sweeps were not all run on one machine (their 'machine' records "
                         f"{', '.join(SAME_MACHINE)} differ or are missing): run every base's sweep on one machine")
    keyed = [{(r["variant"], r["learning_rate"], r["epochs"], r["seed"]): r["f1"] for r in s["runs"] if r.get("max_steps") is None}
             for s in sweeps]
    common = set.intersection(*(set(k) for k in keyed))
    if not common:
        raise SystemExit("choose_base.py: the sweeps share no (method, rate, epochs, seed): run the same grid and seeds on each base")
    seeds = sorted({k[3] for k in common})
    settings = {k[:3] for k in common if all((*k[:3], s) in common for s in seeds)}  # every seed on every base
    methods = sorted({k[0] for k in settings})
    table: dict[str, dict] = {}
    for mode, runs in zip(modes, keyed):
        per_method = {}
        for method in methods:
            rates = {(rate, epochs): statistics.fmean(runs[(method, rate, epochs, s)] for s in seeds)
                     for m, rate, epochs in sorted(settings) if m == method}
            (rate, epochs), f1 = max(rates.items(), key=lambda item: item[1])
            per_method[method] = {"learning_rate": rate, "epochs": epochs, "f1": f1, "by_rate": {f"{r:g}": v for (r, _), v in rates.items()}}
        table[mode] = {"methods": per_method, "mean_f1": statistics.fmean(v["f1"] for v in per_method.values())}
    chosen = max(modes, key=lambda mode: (table[mode]["mean_f1"], -modes.index(mode)))
    return {"seeds": seeds, "methods": methods, "by_base": table, "chosen": chosen}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", help="sweep_valid.py outputs, one per base")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "base_choice.json"))
    args = parser.parse_args(argv)
    from sweep_valid import read_sweep

    sweeps = [read_sweep(p, "choose_base.py", flag=None) for p in args.sweeps]
    result = compare(sweeps)
    result = {"command": " ".join(["python benchmarks/choose_base.py", *(argv if argv is not None else sys.argv[1:])]),
              "scored_on": "spo_valid.jsonl", "sweeps": [Path(p).name for p in args.sweeps],
              "machine": sweeps[0]["machine"], **result}
    print(f"validation triple F1, mean over seeds {result['seeds']}, each method at its best rate:")
    print(f"{'base':<6} " + " ".join(f"{m:>18}" for m in result["methods"]) + f" {'mean':>7}")
    for mode, row in result["by_base"].items():
        print(f"{mode:<6} " + " ".join(f"{row['methods'][m]['f1']:.3f} (lr {row['methods'][m]['learning_rate']:g})".rjust(18)
                                      for m in result["methods"]) + f" {row['mean_f1']:>7.3f}")
    print(f"chosen base: {result['chosen']}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
