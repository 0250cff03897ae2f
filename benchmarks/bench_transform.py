"""Speed of awd's DWT against PyWavelets and ptwt, measured in one process on the same cores.

Tasks (float32, CPU):
* ``fi``: multilevel forward + inverse without gradients (awd module, ``pywt.wavedec/waverec``
  batched via ``axis``/``axes``, ``ptwt.wavedec/waverec`` with a ``pywt.Wavelet``);
* ``fib``: one training step: forward, inverse, MSE + 1e-3 * mean |coefficients|, backward to the
  filter (awd module parameter; ptwt with a ``WaveletTensorTuple`` built from a requires_grad h).

Implementations are interleaved round by round; each entry is the median and the best of all
timed repetitions. ``--setup THREADS:CLOCK`` (repeatable) chooses torch's thread count and the
clock: ``wall`` (wall-clock time) or ``cpu`` (CPU time of the calling thread, only with one
thread: on a loaded machine it leaves out the time spent waiting for a core). The results table
replaces the ``## Transform`` section of ``benchmarks/README.md`` (other sections are kept).

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_transform.py --setup 2:wall``
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the OpenMP runtime start

import argparse  # noqa: E402
import importlib.metadata as metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pywt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_section  # noqa: E402
from awd.io import atomic_path  # noqa: E402
from awd.transform import DWT1d, DWT2d, iter_coeffs, qmf  # noqa: E402

SECTION = "## Transform"
CASES = {
    "1d_small": dict(ndim=1, shape=(1024, 40), J=4),
    "1d_large": dict(ndim=1, shape=(4096, 256), J=5),
    "2d": dict(ndim=2, shape=(64, 256, 256), J=3),
}
TARGETS = {"fi": {"pywt": 1.0, "ptwt": 3.0}, "fib": {"ptwt": 3.0}}
#: Case-specific targets on top of TARGETS (issue 11: the 2D transform feeds the cosmology distillation).
CASE_TARGETS = {("2d", "fi"): {"pywt": 2.0}}


def _loss(x: torch.Tensor, rec: torch.Tensor, coeffs) -> torch.Tensor:
    return ((rec - x) ** 2).mean() + 1e-3 * sum(c.abs().mean() for c in iter_coeffs(coeffs))


def make_steps(case: dict, wave: str, mode: str, seed: int) -> dict:
    """Callables for every (task, implementation) of one case, plus a float32 accuracy check."""
    import ptwt

    ndim, J = case["ndim"], case["J"]
    x_np = np.random.default_rng(seed).standard_normal(case["shape"]).astype(np.float32)
    x = torch.from_numpy(x_np)
    dwt = (DWT1d if ndim == 1 else DWT2d)(wave, J, mode, dtype=torch.float32)
    w = pywt.Wavelet(wave)
    dec, rec = (ptwt.wavedec, ptwt.waverec) if ndim == 1 else (ptwt.wavedec2, ptwt.waverec2)
    pdec, prec = (pywt.wavedec, pywt.waverec) if ndim == 1 else (pywt.wavedec2, pywt.waverec2)
    axes = {"axis": -1} if ndim == 1 else {"axes": (-2, -1)}
    h_ptwt = dwt.h.detach().clone().requires_grad_(True)

    def awd_fi():
        with torch.no_grad():
            return dwt.inverse(dwt(x))

    def pywt_fi():
        return prec(pdec(x_np, w, mode=mode, level=J, **axes), w, mode=mode, **axes)

    def ptwt_fi():
        with torch.no_grad():
            return rec(dec(x, w, mode=mode, level=J), w)

    def awd_fib():
        coeffs = dwt(x)
        _loss(x, dwt.inverse(coeffs), coeffs).backward()
        dwt.h.grad = None

    def ptwt_fib():
        g = qmf(h_ptwt)
        bank = ptwt.WaveletTensorTuple(h_ptwt.flip(0), g.flip(0), h_ptwt, g)
        coeffs = dec(x, bank, mode=mode, level=J)
        _loss(x, rec(coeffs, bank), coeffs).backward()
        h_ptwt.grad = None

    with torch.no_grad():
        ours = list(iter_coeffs(dwt(x)))
    ref = list(iter_coeffs(pdec(x_np, w, mode=mode, level=J, **axes)))
    err = max(float(np.abs(a.numpy() - b).max()) for a, b in zip(ours, ref)) / float(np.abs(x_np).max())
    rec_err = float(np.abs(awd_fi().numpy() - x_np).max()) / float(np.abs(x_np).max())
    steps = {("fi", "awd"): awd_fi, ("fi", "pywt"): pywt_fi, ("fi", "ptwt"): ptwt_fi,
             ("fib", "awd"): awd_fib, ("fib", "ptwt"): ptwt_fib}
    return {"steps": steps, "coef_err": err, "rec_err": rec_err}


def time_steps(steps: dict, reps: int, rounds: int, warmup: int, clock=time.perf_counter) -> dict:
    """Milliseconds of every repetition per step, implementations interleaved by round."""
    times = {k: [] for k in steps}
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for key, fn in steps.items():
            for _ in range(reps):
                t0 = clock()
                fn()
                times[key].append(1e3 * (clock() - t0))
    return times


def _fmt(ms: list[float]) -> str:
    return f"{statistics.median(ms):.3g} ({min(ms):.3g})"


def table(results: dict, mode: str, wave: str) -> tuple[list[str], list[str]]:
    """The Markdown results table and one line per missed target."""
    misses = []
    rows = ["| setup | case | task | awd ms median (best) | pywt ms median (best) "
            "| ptwt ms median (best) | pywt / awd | ptwt / awd | target | met |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for (setup, name), res in results.items():
        case = CASES[name]
        label = f"{name} {'x'.join(map(str, case['shape']))} J={case['J']} {wave} {mode}"
        for task in ("fi", "fib"):
            t = {impl: res["times"][(task, impl)] for impl in ("awd", "pywt", "ptwt")
                 if (task, impl) in res["times"]}
            ratio = {impl: statistics.median(t[impl]) / statistics.median(t["awd"])
                     for impl in t if impl != "awd"}
            goal = {**TARGETS[task], **CASE_TARGETS.get((name, task), {})}
            met = all(ratio[k] >= v for k, v in goal.items())
            misses += [f"- target not met: {setup}, {label}, {task}: awd is {ratio[k]:.2f}× {k} "
                       f"(target ≥ {v:g}×)" for k, v in goal.items() if ratio[k] < v]
            pywt_ms = _fmt(t["pywt"]) if "pywt" in t else "—"
            pywt_ratio = f"{ratio['pywt']:.2f}" if "pywt" in ratio else "—"
            target = ", ".join(f"{k} ≥ {v:g}×" for k, v in goal.items())
            rows.append(f"| {setup} | {label} | {task} | {_fmt(t['awd'])} | {pywt_ms} | {_fmt(t['ptwt'])} "
                        f"| {pywt_ratio} | {ratio['ptwt']:.2f} | {target} | {'yes' if met else 'NO'} |")
    return rows, misses


def environment(load_before, load_after) -> list[str]:
    versions = {p: metadata.version(p) for p in ("torch", "numpy", "PyWavelets", "ptwt")}
    return [
        f"- versions: Python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; setup = torch threads / clock; "
        "pywt is single-threaded in every setup (batched via axis/axes)",
        f"- load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; "
        f"after: {', '.join(f'{v:.2f}' for v in load_after)}",
    ]



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="append", default=None, metavar="THREADS:CLOCK",
                        help="torch threads and clock (wall or cpu), repeatable; default 2:wall")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--wave", default="db5")
    parser.add_argument("--mode", default="zero", help="ptwt has no 'periodization'")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-readme", action="store_true", help="print only")
    parser.add_argument("--json", type=Path, help="also write raw timings here")
    parser.add_argument("--notes", default="", help="text appended under the table")
    args = parser.parse_args(argv)

    setups = []
    for text in args.setup or ["2:wall"]:
        threads, _, clock = text.partition(":")
        if not threads.isdigit() or int(threads) < 1 or clock not in ("wall", "cpu"):
            parser.error(f"--setup {text!r}: expected THREADS:wall or THREADS:cpu")
        if clock == "cpu" and int(threads) != 1:
            parser.error(f"--setup {text!r}: the cpu clock measures one thread, use 1:cpu")
        setups.append((int(threads), clock))

    load_before = os.getloadavg()
    results = {}
    for threads, clock in setups:
        torch.set_num_threads(threads)
        for name in args.cases:
            case = make_steps(CASES[name], args.wave, args.mode, args.seed)
            timer = time.thread_time if clock == "cpu" else time.perf_counter
            case["times"] = time_steps(case.pop("steps"), args.reps, args.rounds, args.warmup, timer)
            results[(f"{threads} / {clock}", name)] = case
            print(f"{threads}:{clock} {name}: max |coef - pywt| / max|x| = {case['coef_err']:.1e}, "
                  f"reconstruction error / max|x| = {case['rec_err']:.1e}", flush=True)
    load_after = os.getloadavg()

    shown = list(argv if argv is not None else sys.argv[1:])
    if "--notes" in shown:  # the notes text is not part of the command worth repeating
        i = shown.index("--notes")
        del shown[i:i + 2]
    command = "OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_transform.py " + " ".join(shown)
    lines = [SECTION, "",
             f"Forward + inverse (fi, no grad) and training step (fib: forward, inverse, MSE + "
             f"1e-3·mean|c|, backward to the filter), float32, {args.rounds} rounds × {args.reps} "
             "timed repetitions, implementations interleaved; setup = torch threads / clock (wall: "
             "wall-clock time; cpu: CPU time of the single thread); ratio > 1 means awd is faster. "
             "Written by `benchmarks/bench_transform.py`.", "",
             f"Command: `{command.strip()}`", ""]
    rows, misses = table(results, args.mode, args.wave)
    lines += rows + [""] + (misses or ["- all targets met in this run"])
    agreement = {name: r for (_, name), r in results.items()}
    lines += [f"- float32 agreement with pywt ({name}): max |coef diff| / max|x| = "
              f"{r['coef_err']:.1e}, reconstruction {r['rec_err']:.1e}" for name, r in agreement.items()]
    lines += environment(load_before, load_after)
    if args.notes:
        lines += ["", args.notes]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_readme:
        write_section(text, SECTION)
    if args.json:
        raw = {f"{s} {n}": {f"{t}/{i}": v for (t, i), v in r["times"].items()}
               for (s, n), r in results.items()}
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
