"""The generic workflow stages, one function each, called by the thin scripts in
``workflow/scripts/``. Every stage works for any registered domain.

Each stage hands the domain's hooks its slice of the config only (:mod:`awd.stages`): a hook
that reads a key its stage does not declare fails with a KeyError naming the declaration.
"""
from __future__ import annotations

import contextlib
import glob
import importlib
import logging
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from awd.domain import Dataset, get_domain
from awd.io import InputError, atomic_dir, read_json, write_json
from awd.stages import stage_config

log = logging.getLogger("awd")


@contextlib.contextmanager
def stage(name: str, log_file: str | None, threads: int = 1, seed: int | None = None,
          modules: Iterable[str] = ()) -> Iterator[None]:
    """Run a stage: log to ``log_file``, pin torch to ``threads``, deterministic algorithms,
    and import the ``modules`` that register domains from outside this repository.

    Errors are logged with the stage name before they propagate, so the rule's log says
    what failed and where.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    torch.set_num_threads(max(1, int(threads)))
    # one explanatory warning (check_wavelet_fits) instead of one per transform call
    warnings.filterwarnings("ignore", message=r"Level value of \d+ is too high", category=UserWarning)
    torch.use_deterministic_algorithms(True, warn_only=False)
    if seed is not None:
        torch.manual_seed(seed)
    log.info("stage %s: threads=%d", name, threads)
    try:
        for module in modules:
            importlib.import_module(module)
        yield
    except Exception as err:
        log.error("stage %s failed: %s: %s", name, type(err).__name__, err)
        raise
    log.info("stage %s: done", name)


def remove_stale_temporaries(*paths: str | Path | None) -> list[Path]:
    """Delete the temporary files and folders that an atomic write of one of ``paths`` left
    behind when its process was killed (``.<name>.*.tmp`` beside it, see ``awd.io``).

    Call it only from the job that owns ``paths``: a concurrent writer would lose its file.
    """
    removed = []
    for path in (Path(p) for p in paths if p is not None):
        for tmp in sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted run", tmp)
            removed.append(tmp)
    return removed


#: Short orthogonal wavelets suggested when the configured one is too long for the inputs.
SHORT_WAVELETS = ("haar", "db2", "sym3", "db3", "coif1", "db4", "sym4")


def check_wavelet_fits(sample_shape: tuple[int, ...], wave: str, J: int, key: str = "distill") -> str | None:
    """Warn (once, in the log) when ``J`` levels of ``wave`` exceed what inputs of
    ``sample_shape`` allow without boundary effects everywhere; return the message or None.

    pywt calls that "Level value too high" and warns at every transform; the stages silence
    that flood and say it here once, with shorter wavelets that would fit.
    """
    import pywt

    try:
        length = pywt.Wavelet(wave).dec_len
    except ValueError:
        return None
    size = min(sample_shape) if sample_shape else 0
    deepest = pywt.dwt_max_level(size, length) if size else 0
    if J <= deepest:
        return None
    fits = [w for w in SHORT_WAVELETS if pywt.dwt_max_level(size, pywt.Wavelet(w).dec_len) >= J]
    msg = (f"{key}.wave '{wave}' (filter length {length}) is too long for inputs of size "
           f"{'x'.join(map(str, sample_shape))} at {key}.J={J}: every coefficient feels the boundary "
           f"(the deepest level without that is {deepest}). Use a shorter wavelet"
           + (f" ({', '.join(fits)} fit {J} levels)" if fits else "") + f" or a smaller {key}.J.")
    log.warning(msg)
    return msg


def target_index(dom, cfg: dict, ds: Dataset) -> int:
    """Index of the teacher output that is distilled: ``distill.target`` by name, else the
    domain's ``target``; an unknown name lists the outputs."""
    from awd.teacher import output_names

    loss = cfg.get("teacher", {}).get("loss", "mse") if isinstance(cfg.get("teacher"), dict) else "mse"
    names = output_names(ds, loss)
    name = cfg["distill"].get("target") or dom.target
    if name not in names:
        raise InputError(None, f"{dom.name}.distill.target: '{name}' is not an output of the teacher; "
                               f"outputs: {names}")
    return names.index(name)


def run_simulate(domain: str, cfg: dict, raw_dir: str | Path, threads: int = 1) -> None:
    """Write the domain's mock raw data; the folder appears only when complete."""
    dom = get_domain(domain)
    cfg = stage_config(dom, "simulate", cfg)
    remove_stale_temporaries(raw_dir)
    with atomic_dir(raw_dir) as tmp:
        dom.simulate(cfg, Path(tmp), threads=threads)


def run_ingest(domain: str, cfg: dict, raw_dir: str | Path, out_dir: str | Path, dataset_path: str | Path,
               threads: int = 1) -> Dataset:
    """Read raw files into the dataset file (and the domain's side tables in ``out_dir``).

    The domain writes into a staging folder that replaces ``out_dir`` only when the whole
    ingest succeeded, so bad input leaves no partial tables behind.
    """
    dom = get_domain(domain)
    cfg = stage_config(dom, "ingest", cfg)
    if raw_dir is None:
        raise InputError(None, f"{domain}.data.root is not set: data.source 'files' needs the raw data folder")
    raw_dir, out_dir, dataset_path = Path(raw_dir), Path(out_dir), Path(dataset_path)
    if not raw_dir.is_dir():
        raise InputError(raw_dir, f"data folder of domain '{domain}' does not exist or is not a folder "
                                  f"(config {domain}.data.root)")
    if raw_dir.resolve() == out_dir.resolve() or out_dir.resolve() in raw_dir.resolve().parents:
        raise InputError(raw_dir, f"data folder lies inside the ingest output folder {out_dir}, which ingest replaces")
    remove_stale_temporaries(out_dir, dataset_path)
    with atomic_dir(out_dir) as tmp:
        ds = dom.ingest(cfg, raw_dir, tmp, threads=threads)
        if ds.X.ndim - 1 != dom.signal_ndim:
            raise InputError(raw_dir, f"domain '{domain}' declares signal_ndim={dom.signal_ndim} "
                                      f"({'(n, L) signals' if dom.signal_ndim == 1 else '(n, H, W) images'}) but its "
                                      f"ingest returned X of shape {tuple(ds.X.shape)}")
        counts = {s: int((ds.split == s).sum()) for s in ("train", "val", "test")}
        log.info("ingest %s: %d samples %s, X %s", domain, len(ds.X), counts, ds.X.shape[1:])
        inside = dataset_path.parent.resolve() == out_dir.resolve()
        ds.save(tmp / dataset_path.name if inside else dataset_path)
    return ds


def run_teacher(domain: str, cfg: dict, dataset_path: str | Path, model_path: str | Path,
                metrics_path: str | Path, checkpoint: str | Path | None = None, device: str = "cpu") -> dict:
    """Train the domain's teacher; write the weights and its test metrics."""
    import torch

    from awd.stats import r2, rmse
    from awd.teacher import TeacherConfig, class_labels, fit_teacher, predict, resolve_device, save_teacher

    dom = get_domain(domain)
    cfg = stage_config(dom, "teacher", cfg)
    remove_stale_temporaries(model_path, metrics_path, checkpoint)
    ds = Dataset.load(dataset_path)
    tcfg = TeacherConfig.from_dict(cfg["teacher"])
    torch.manual_seed(tcfg.seed)
    core = dom.build_teacher(cfg, ds)
    model, history = fit_teacher(core, ds, tcfg, checkpoint=checkpoint, device=resolve_device(device))
    test_X, test_y = ds.view("test"), ds.y[ds.indices("test")]  # batches read from X, no copy of the split
    pred = predict(model, test_X, tcfg.batch_size)
    metrics = {"history": history, "targets": {}}
    if tcfg.classifies:
        labels = class_labels(test_y)
        logits = torch.as_tensor(pred)
        metrics["targets"][ds.target_names[0]] = {
            "test_accuracy": float((pred.argmax(axis=1) == labels).mean()) if len(labels) else float("nan"),
            "test_cross_entropy": float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels)))
            if len(labels) else float("nan")}
    else:
        for j, name in enumerate(ds.target_names):
            metrics["targets"][name] = {"test_rmse": rmse(test_y[:, j], pred[:, j]),
                                        "test_r2": r2(test_y[:, j], pred[:, j])}
    save_teacher(model_path, model.cpu())
    write_json(metrics_path, metrics)
    if checkpoint is not None and Path(checkpoint).exists():
        Path(checkpoint).unlink()
    log.info("teacher %s: %s", domain, metrics["targets"])
    return metrics


def load_domain_teacher(domain: str, cfg: dict, ds: Dataset, model_path: str | Path):
    """The trained, frozen teacher of a domain."""
    from awd.teacher import load_teacher

    return load_teacher(model_path, get_domain(domain).build_teacher(cfg, ds))


def run_distill(domain: str, cfg: dict, dataset_path: str | Path, teacher_path: str | Path, index: int,
                out_path: str | Path, checkpoint: str | Path | None = None, device: str = "cpu") -> None:
    """Run the ``index``-th distillation job of the grid (see ``awd.distill.distill_jobs``: one
    lambda path per job, or one seed's lambdas together with the batched engine)."""
    from awd.distill import DistillConfig, distill_job, save_results
    from awd.teacher import resolve_device

    dom = get_domain(domain)
    cfg = stage_config(dom, "distill", cfg)
    remove_stale_temporaries(out_path, checkpoint)
    ds = Dataset.load(dataset_path)
    teacher = load_domain_teacher(domain, cfg, ds, teacher_path)
    settings = {k: v for k, v in cfg["distill"].items() if k != "target"}
    dcfg = DistillConfig.from_dict({**settings, "target": target_index(dom, cfg, ds),
                                    "device": str(resolve_device(device))})
    check_wavelet_fits(ds.X.shape[1:], dcfg.wave, dcfg.J)
    # index views of X (awd.domain.Rows): the distiller reads its batches of the train split (or
    # of its max_train subset) and of the val split from them, so no split is ever copied whole
    train, val = ds.view("train"), ds.view("val")
    results = distill_job(teacher, train, val, config=dcfg, job=index,
                          init=dom.distill_init(cfg), checkpoint=checkpoint)
    save_results(out_path, results)
    if checkpoint is not None and Path(checkpoint).exists():
        Path(checkpoint).unlink()


def run_heads(domain: str, cfg: dict, dataset_path: str | Path, teacher_path: str | Path,
              grid_paths: list[str | Path], out_dir: str | Path, threads: int = 1) -> dict:
    """Fit the domain's heads over the learned wavelets; the domain writes table.csv and wavelet.json."""
    from awd.distill import load_results

    dom = get_domain(domain)
    cfg = stage_config(dom, "heads", cfg)
    ds = Dataset.load(dataset_path)
    teacher = load_domain_teacher(domain, cfg, ds, teacher_path)
    grid = [r for p in grid_paths for r in load_results(p)]
    summary = dom.fit_heads(cfg, ds, grid, teacher, Path(out_dir), threads=threads)
    log.info("heads %s: %s", domain, summary)
    return summary


def run_figures(domain: str, cfg: dict, results_dir: str | Path, raw_dir: str | Path,
                fig_dir: str | Path) -> list[Path]:
    """Draw the domain's figures into ``fig_dir`` (created only when all are drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    dom = get_domain(domain)
    cfg = stage_config(dom, "figures", cfg)
    with atomic_dir(fig_dir) as tmp:
        written = dom.figures(cfg, Path(results_dir), Path(raw_dir), Path(tmp))
    return [Path(fig_dir) / Path(p).name for p in written]


def _error_line(log_file: str | Path) -> str | None:
    """The last "stage X failed: ..." line of a job's log, else its last error-looking line."""
    path = Path(log_file)
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    failed = [line[line.find("stage "):] for line in lines if re.search(r"stage \S+ failed: ", line)]
    if failed:
        return failed[-1]
    errors = [line for line in lines if re.search(r"\b\w*(Error|Exception)\b", line)]
    return errors[-1] if errors else (lines[-1] if lines else None)


def failure_summary(snakemake_log: str | Path | list | None) -> str:
    """One line per failed job of a run: the rule, its log file and the error line its log
    ends with, read from Snakemake's own log(s) of the run ("" when no job failed)."""
    logs = snakemake_log if isinstance(snakemake_log, (list, tuple)) else [snakemake_log]
    text = "".join(Path(p).read_text(errors="replace") for p in logs if p and Path(p).is_file())
    lines = []
    for m in re.finditer(r"^Error in rule (\S+):\n((?:[ \t]+.*\n?)*)", text, re.M):
        rule, block = m.group(1), m.group(2)
        found = re.search(r"^\s+log: (.+?)(?: \(check log file\(s\) for error details\))?$", block, re.M)
        logs = [p.strip() for p in found.group(1).split(",")] if found else []
        detail = next((d for d in map(_error_line, logs) if d), None) or "see the output above"
        lines.append(f"  {rule} ({', '.join(logs) or 'no log file'}): {detail}")
    if not lines:
        return ""
    return f"AWD workflow: {len(lines)} job(s) failed:\n" + "\n".join(lines)


def read_metrics(path: str | Path) -> dict:
    return read_json(path)
