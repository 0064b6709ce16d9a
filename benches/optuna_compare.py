#!/usr/bin/env python3
"""Optuna's regret on the functions of `flotilla bench solver`.

Runs Optuna's TPE and random samplers on the same functions, domains
(log-scale parameters via ``suggest_float(..., log=True)``), seeds (0, 1, ...)
and budgets as ``flotilla bench solver``, one trial at a time, and prints the
same table: regret ``best - f*`` after each budget, median [q1 - q3] over the
seeds. ``--json`` prints one JSON object per cell instead, which is what
``flotilla bench solver --compare`` reads to show both side by side.

Samplers (labels as in the table):

- ``optuna-tpe``: ``TPESampler(seed=s)`` with Optuna's defaults. In Optuna 5
  that is the *multivariate* TPE with the constant liar (10 start-up trials,
  24 EI candidates): the model Flotilla's ``tpe`` follows.
- ``optuna-tpe-uni``: the same with ``multivariate=False`` (Flotilla's
  ``tpe-uni``).
- ``optuna-random``: ``RandomSampler(seed=s)``.
- ``optuna-gp``: ``GPSampler(seed=s)`` with Optuna's defaults (10 start-up
  trials, Matérn-5/2 ARD, log EI); needs PyTorch (``pip install torch``).
  In the default set with ``optuna-tpe`` (the issue's goals compare with
  both); ``--samplers optuna-tpe`` runs without PyTorch.

Multi-objective functions (``zdt1``, ``zdt2``, ``dtlz2``, as
``simulations/src/multi_objective.rs``): the score is the *hypervolume gap*
``HV* - HV`` of the trials so far (reference (11, 11) for ZDT, 1.1 per
objective for DTLZ2), and the default samplers are ``optuna-nsga2``
(``NSGAIISampler(seed=s)``), ``optuna-tpe`` (``TPESampler(seed=s)``, which is
MOTPE for several directions) and ``optuna-random``. ``flotilla bench solver
--suite mo --compare`` runs them.

Functions: the seven of the quality goal by default; ``--functions`` also
takes the scalable ones with a dimension (``levy5``) and any function with
``-off`` (its domain shifted off centre), as ``objectives::by_name`` does.

Setup (once, from the repository root; the venv lives under the ignored
``target/`` dir, where ``flotilla bench solver --compare`` looks for it):

    python3 -m venv target/optuna-venv
    target/optuna-venv/bin/pip install optuna    # Optuna 5.0.0 when measured

Run:

    target/optuna-venv/bin/python benches/optuna_compare.py --seeds 20 --budgets 50,100,200

TPE and random ignore the trial budget, so each seed runs once at the largest
budget and the smaller budgets read the best value after their first trials.
"""

import argparse
import json
import math
import multiprocessing
import os
import sys
import warnings

PI = math.pi


def vector(p):
    return [p[f"x{i}"] for i in range(len(p))]


def branin(p):
    x, y = p["x"], p["y"]
    b = 5.1 / (4 * PI * PI)
    c = 5 / PI
    t = 1 / (8 * PI)
    return (y - b * x * x + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


HART_ALPHA = [1.0, 1.2, 3.0, 3.2]
HART_A = [
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
]
HART_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]


def hartmann6(p):
    x = vector(p)
    return -sum(
        HART_ALPHA[i]
        * math.exp(-sum(HART_A[i][j] * (x[j] - HART_P[i][j]) ** 2 for j in range(6)))
        for i in range(4)
    )


def rosenbrock(p):
    x = vector(p)
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(len(x) - 1))


def rastrigin(p):
    x = vector(p)
    return 10 * len(x) + sum(v * v - 10 * math.cos(2 * PI * v) for v in x)


def ackley(p):
    x = vector(p)
    d = len(x)
    squares = sum(v * v for v in x) / d
    cosines = sum(math.cos(2 * PI * v) for v in x) / d
    return max(0.0, -20 * math.exp(-0.2 * math.sqrt(squares)) - math.exp(cosines) + 20 + math.e)


def levy(p):
    w = [1 + (v - 1) / 4 for v in vector(p)]
    return (
        math.sin(PI * w[0]) ** 2
        + sum((v - 1) ** 2 * (1 + 10 * math.sin(PI * v + 1) ** 2) for v in w[:-1])
        + (w[-1] - 1) ** 2 * (1 + math.sin(2 * PI * w[-1]) ** 2)
    )


def lr_batch(p):
    u = math.log10(p["lr"])
    v = math.log2(p["batch"])
    return 0.1 + (u - (-3 + 0.15 * v)) ** 2 + 0.02 * (v - 4) ** 2


def zdt_g(x):
    return 1 + 9 * sum(x[1:]) / (len(x) - 1)


def zdt1(x):
    g = zdt_g(x)
    return [x[0], g * (1 - math.sqrt(x[0] / g))]


def zdt2(x):
    g = zdt_g(x)
    return [x[0], g * (1 - (x[0] / g) ** 2)]


def dtlz2(x):
    g = sum((v - 0.5) ** 2 for v in x[2:])
    a, b = x[0] * PI / 2, x[1] * PI / 2
    r = 1 + g
    return [r * math.cos(a) * math.cos(b), r * math.cos(a) * math.sin(b), r * math.sin(a)]


# name -> (dimensions, objectives, reference point, HV*); as `suite()` in
# simulations/src/multi_objective.rs.
MULTI_OBJECTIVE = {
    "zdt1": (30, zdt1, [11.0, 11.0], 121 - 1 / 3),
    "zdt2": (30, zdt2, [11.0, 11.0], 121 - 2 / 3),
    "dtlz2": (12, dtlz2, [1.1, 1.1, 1.1], 1.1**3 - PI / 6),
}


def dominates(a, b):
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def hypervolume(points, reference):
    """Exact hypervolume (minimising): a sweep in 2-D, slices along the last
    objective above, as flotilla_solver::pareto::hypervolume."""
    inside = [p for p in points if all(x < r for x, r in zip(p, reference))]
    front = [p for p in inside if not any(dominates(q, p) for q in inside)]
    if not front:
        return 0.0
    m = len(reference)
    if m == 1:
        return reference[0] - min(p[0] for p in front)
    if m == 2:
        area, ceiling = 0.0, reference[1]
        for p in sorted(front):
            if p[1] < ceiling:
                area += (reference[0] - p[0]) * (ceiling - p[1])
                ceiling = p[1]
        return area
    front.sort(key=lambda p: p[-1])
    volume = 0.0
    for i, p in enumerate(front):
        top = front[i + 1][-1] if i + 1 < len(front) else reference[-1]
        if top > p[-1]:
            volume += hypervolume([q[:-1] for q in front[: i + 1]], reference[:-1]) * (top - p[-1])
    return volume


def xs(d, lo, hi):
    return [(f"x{i}", lo, hi, False) for i in range(d)]


# The functions that scale to any dimension: stem -> (lo, hi, objective), as
# `SCALABLE` in simulations/src/objectives.rs (f* = 0 for each).
SCALABLE = {
    "rosenbrock": (-5, 10, rosenbrock),
    "rastrigin": (-5.12, 5.12, rastrigin),
    "ackley": (-32.768, 32.768, ackley),
    "levy": (-10, 10, levy),
}

# name -> (params [(name, min, max, log)], objective, f*); as `all()` in
# simulations/src/objectives.rs.
FUNCTIONS = {
    "branin": ([("x", -5, 10, False), ("y", 0, 15, False)], branin, 0.397887),
    "hartmann6": (xs(6, 0, 1), hartmann6, -3.32237),
    **{f"{stem}10": (xs(10, lo, hi), f, 0.0) for stem, (lo, hi, f) in SCALABLE.items()},
    "lr_batch": ([("batch", 1, 64, True), ("lr", 1e-4, 1e-1, True)], lr_batch, 0.1),
}


def resolve(name):
    """A function by name, as `objectives::by_name`: one of FUNCTIONS, a
    scalable one with its dimension (``levy5``), or either with ``-off``
    (the domain shifted down by 30% of its width, of ``ln x`` for log
    parameters). ``None`` if unknown."""
    if name.endswith("-off"):
        base = resolve(name[: -len("-off")])
        if base is None:
            return None
        params, objective, optimum = base
        shifted = []
        for n, lo, hi, log in params:
            if log:
                shift = math.exp(0.3 * math.log(hi / lo))
                shifted.append((n, lo / shift, hi / shift, log))
            else:
                shift = 0.3 * (hi - lo)
                shifted.append((n, lo - shift, hi - shift, log))
        return shifted, objective, optimum
    if name in FUNCTIONS:
        return FUNCTIONS[name]
    stem = name.rstrip("0123456789")
    digits = name[len(stem) :]
    if stem in SCALABLE and digits and 1 <= int(digits) <= 64:
        lo, hi, f = SCALABLE[stem]
        return xs(int(digits), lo, hi), f, 0.0
    return None


SAMPLERS = ["optuna-tpe", "optuna-gp"]
MO_SAMPLERS = ["optuna-nsga2", "optuna-tpe", "optuna-random"]


def make_sampler(label, seed):
    import optuna

    if label == "optuna-tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if label == "optuna-tpe-uni":
        return optuna.samplers.TPESampler(seed=seed, multivariate=False)
    if label == "optuna-random":
        return optuna.samplers.RandomSampler(seed=seed)
    if label == "optuna-gp":
        return optuna.samplers.GPSampler(seed=seed)
    if label == "optuna-nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise SystemExit(
        f"unknown sampler {label!r}: expected one of "
        f"{', '.join(['optuna-tpe', 'optuna-tpe-uni', 'optuna-random', 'optuna-gp', 'optuna-nsga2'])}"
    )


def run_multi_objective(function, label, seed, budgets):
    """The hypervolume gap after each budget of one multi-objective run
    (indexed by trial, set only at the budgets)."""
    import optuna

    d, objectives, reference, ideal = MULTI_OBJECTIVE[function]

    def evaluate(trial):
        return objectives([trial.suggest_float(f"x{i:02}", 0.0, 1.0) for i in range(d)])

    study = optuna.create_study(
        sampler=make_sampler(label, seed), directions=["minimize"] * len(reference)
    )
    study.optimize(evaluate, n_trials=budgets[-1])
    points = [t.values for t in study.trials]
    out = [None] * budgets[-1]
    for b in budgets:
        out[b - 1] = ideal - hypervolume(points[:b], reference)
    return out


def run(job):
    """Best value after each trial of one (function, sampler, seed) run (the
    hypervolume gap at each budget for a multi-objective function)."""
    function, label, seed, budgets = job
    trials = budgets[-1]
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    if function in MULTI_OBJECTIVE:
        return run_multi_objective(function, label, seed, budgets)
    params, objective, _ = resolve(function)

    def evaluate(trial):
        p = {name: trial.suggest_float(name, lo, hi, log=log) for name, lo, hi, log in params}
        return objective(p)

    study = optuna.create_study(sampler=make_sampler(label, seed))
    study.optimize(evaluate, n_trials=trials)
    best, out = math.inf, []
    for t in study.trials:
        best = min(best, t.value)
        out.append(best)
    return out


def quantile(values, q):
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def num(x):
    """As the Rust table prints: 3 significant digits."""
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 0.01:
        return f"{x:.{max(0, 2 - math.floor(math.log10(abs(x))))}f}"
    return f"{x:.1e}".replace("e-0", "e-")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budgets", default="50,100,200")
    ap.add_argument("--samplers", default=None, help="default: " + ",".join(SAMPLERS)
                    + " (" + ",".join(MO_SAMPLERS) + " for multi-objective functions)")
    ap.add_argument("--functions", default=",".join(FUNCTIONS))
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", action="store_true", help="one JSON object per cell")
    a = ap.parse_args()
    budgets = sorted({int(b) for b in a.budgets.split(",")})
    functions = a.functions.split(",")
    multi = [f in MULTI_OBJECTIVE for f in functions]
    if any(multi) and not all(multi):
        raise SystemExit("give either single- or multi-objective functions, not both")
    default = MO_SAMPLERS if all(multi) else SAMPLERS
    samplers = a.samplers.split(",") if a.samplers else default
    for f in functions:
        if f not in MULTI_OBJECTIVE and resolve(f) is None:
            raise SystemExit(f"unknown function {f!r}")
    for s in samplers:
        make_sampler(s, 0)
    jobs = [(f, s, k, tuple(budgets)) for f in functions for s in samplers for k in range(a.seeds)]
    with multiprocessing.Pool(a.processes) as pool:
        bests = dict(zip(jobs, pool.map(run, jobs, chunksize=1)))
    cells = []
    for f in functions:
        optimum = 0.0 if f in MULTI_OBJECTIVE else resolve(f)[2]
        for b in budgets:
            for s in samplers:
                regrets = [bests[(f, s, k, tuple(budgets))][b - 1] - optimum for k in range(a.seeds)]
                cells.append({"function": f, "budget": b, "sampler": s, "regrets": regrets})
    if a.json:
        for c in cells:
            print(json.dumps(c))
        return
    import optuna

    score = "Hypervolume gap (HV* - HV)" if all(multi) else "Regret (best - f*)"
    print(
        f"{score} after each budget: median [q1 - q3] over {a.seeds} seeds"
        f" (optuna {optuna.__version__})"
    )
    w = 22
    print(f"{'function':<13} {'budget':>6}" + "".join(f" {s:>{w}}" for s in samplers))
    by = {(c["function"], c["budget"], c["sampler"]): c["regrets"] for c in cells}
    for f in functions:
        for b in budgets:
            row = f"{f:<13} {b:>6}"
            for s in samplers:
                r = by[(f, b, s)]
                text = f"{num(quantile(r, 0.5))} [{num(quantile(r, 0.25))} - {num(quantile(r, 0.75))}]"
                row += f" {text:>{w}}"
            print(row)


if __name__ == "__main__":
    sys.exit(main())
