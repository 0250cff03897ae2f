"""Speed of one AWD distillation epoch: fast TRIM path vs exact double back-propagation.

Teacher: a small ResNet-like ReLU CNN in plain torch (stride-2 stem, three residual stages,
BatchNorm in eval mode), so it is piecewise linear and the fast path is exact. Data: random
256x256 maps, float32, db5, J=4, 'zero' mode, saliency, lambda = 0.02, gamma = 0.00368 (the
reference's selected cosmology point). Each path runs ``awd.distill.distill_path`` for
``--epochs`` epochs; the epoch time is the time between consecutive end-of-epoch callbacks
(so it excludes the fast path's one-off input-gradient pass and the validation pass, which
are timed separately). The results replace the ``## Distillation`` section of
``benchmarks/README.md`` (other sections are kept).

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_distill.py --threads 2``
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the OpenMP runtime start

import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_section  # noqa: E402
from awd.distill import DistillConfig, distill_path  # noqa: E402
from awd.trim import input_gradients, is_piecewise_linear  # noqa: E402

SECTION = "## Distillation"
log = logging.getLogger("bench_distill")


class Block(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a (projected) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNetLike(nn.Module):
    """(B, H, W) maps -> (B, 3): stem conv 7x7/2 + max-pool 3x3/2, then one stage per entry of
    ``blocks`` (width doubling, stride 2 after the first), global average pool, linear head.
    ``width=64, blocks=(2, 2, 2, 2)`` is ResNet-18's layout (the reference cosmology teacher)."""

    def __init__(self, width: int = 16, blocks: tuple[int, ...] = (1, 1, 1), seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers: list[nn.Module] = [nn.Conv2d(1, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                       nn.MaxPool2d(3, 2, 1)]
            cin = width
            for i, n in enumerate(blocks):
                cout = width * 2 ** i
                layers += [Block(cin if j == 0 else cout, cout, 2 if i and j == 0 else 1) for j in range(n)]
                cin = cout
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 3)]
            self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1))


def parse_teacher(spec: str) -> tuple[int, tuple[int, ...]]:
    """'WIDTH:B1,B2,...' -> (width, blocks per stage)."""
    width, _, blocks = spec.partition(":")
    return int(width), tuple(int(b) for b in blocks.split(",")) if blocks else (1, 1, 1)


def time_path(teacher: nn.Module, X: np.ndarray, X_val: np.ndarray, cfg: DistillConfig) -> dict:
    """Run one distillation path; return the per-epoch times (s) and the total wall time."""
    stamps: list[float] = []
    start = time.perf_counter()
    res = distill_path(teacher, X, X_val, lam=0.02, gammas=[0.00368], config=cfg,
                       callback=lambda info: stamps.append(time.perf_counter()))
    total = time.perf_counter() - start
    epochs = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"epochs": epochs, "total": total, "interpretation": res[0].losses["interpretation"]}



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-maps", type=int, default=32, help="training maps (one epoch = n/batch steps)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="map side length")
    parser.add_argument("--teachers", nargs="+", default=["16:1,1,1", "32:2,2,2", "64:2,2,2,2"],
                        help="teacher layouts WIDTH:BLOCKS (64:2,2,2,2 = ResNet-18 layout)")
    parser.add_argument("--epochs", type=int, default=2, help=">= 2: epoch times are between callbacks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-readme", action="store_true", help="log only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.epochs < 2:
        parser.error("--epochs must be >= 2")

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((args.n_maps, args.size, args.size)).astype(np.float32)
    X_val = rng.standard_normal((4, args.size, args.size)).astype(np.float32)
    base = dict(wave="db5", J=4, mode="zero", epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                target=1, dtype="float32", progress=False)
    steps = -(-args.n_maps // args.batch_size)
    load_before = os.getloadavg()
    rows = []
    for spec in args.teachers:
        width, blocks = parse_teacher(spec)
        teacher = ResNetLike(width, blocks, args.seed).eval()
        if not is_piecewise_linear(teacher):
            raise SystemExit("the benchmark teacher must be piecewise linear")
        n_params = sum(p.numel() for p in teacher.parameters())
        t0 = time.perf_counter()
        input_gradients(teacher, torch.from_numpy(X), 1, args.batch_size)
        precompute = time.perf_counter() - t0
        fast = time_path(teacher, X, X_val, DistillConfig.from_dict({**base, "fast_path": "always"}))
        exact = time_path(teacher, X, X_val, DistillConfig.from_dict({**base, "fast_path": "never"}))
        f_epoch, e_epoch = float(np.median(fast["epochs"])), float(np.median(exact["epochs"]))
        if not math.isclose(fast["interpretation"], exact["interpretation"], rel_tol=1e-4):
            raise SystemExit(f"fast and exact paths disagree: {fast['interpretation']} vs {exact['interpretation']}")
        rows.append(f"| width {width}, blocks {list(blocks)} ({n_params / 1e6:.2f} M params) | {e_epoch:.2f} | "
                    f"{f_epoch:.2f} | **{e_epoch / f_epoch:.1f}x** | {precompute:.2f} | "
                    f"{e_epoch / (f_epoch + precompute):.1f}x |")
        log.info("%s", rows[-1])
    load_after = os.getloadavg()
    command = "OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_distill.py " + " ".join(argv or sys.argv[1:])
    lines = [
        SECTION, "",
        f"One AWD distillation epoch on {args.n_maps} random {args.size}x{args.size} maps ({steps} steps of "
        f"{args.batch_size}) with ResNet-like ReLU teachers in eval mode (stem 7x7/2 + max-pool, residual "
        "stages), float32, db5, J=4, 'zero' mode, saliency, lambda 0.02, gamma 0.00368. Epoch time = median "
        f"over epochs 2..{args.epochs} of the time between end-of-epoch callbacks of "
        "`awd.distill.distill_path`; the fast path's one-off input-gradient pass (once per lambda path, not per "
        "epoch or grid point) is listed separately. Both paths give the same validation interpretation loss "
        "(checked). Written by `benchmarks/bench_distill.py`.", "",
        f"Command: `{command.strip()}`", "",
        "| teacher | exact double back-prop, epoch (s) | fast path, epoch (s) | speed-up per epoch | "
        "one-off input gradients (s) | speed-up incl. that pass in one epoch |",
        "|---|---|---|---|---|---|",
        *rows, "",
        "The fast path's cost does not depend on the teacher (wavelet transform, its adjoint and their double "
        "backward only), the exact path's grows with it: the ratio is largest for the ResNet-18 layout of the "
        "reference cosmology teacher.",
        f"- environment: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s), load average {load_before[0]:.2f} before / {load_after[0]:.2f} after "
        "(shared machine: absolute times are noisy, ratios less so).",
    ]
    text = "\n".join(lines) + "\n"
    log.info("%s", text)
    if not args.no_readme:
        write_section(text, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
