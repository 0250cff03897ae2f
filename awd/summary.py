"""The paper-style summary: every domain's result table beside the published numbers."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from awd.domain import get_domain
from awd.io import atomic_path


def data_source_label(data: dict) -> str:
    """Where a domain's numbers come from, in plain words: the simulator or the folder read."""
    source = data.get("source", "mock")
    if source == "mock":
        return "simulated data (the domain's embedded simulator)"
    root = data.get("root")
    return f"data read from {Path(root).name if root else 'data.root'} (data.source: {source})"


def domain_summary(domain: str, table_path: str | Path, cfg: dict) -> pd.DataFrame:
    """One domain's table with the paper's value per method and the data provenance."""
    dom = get_domain(domain)
    table = pd.read_csv(table_path)
    metric = dom.metric
    if metric not in table.columns or "method" not in table.columns:
        raise ValueError(f"{table_path}: expected columns 'method' and '{metric}', got {list(table.columns)}")
    paper = {k.lower(): v for k, v in dom.paper_reference.items()}
    data_label = data_source_label(cfg.get("data") or {})
    out = pd.DataFrame({
        "domain": domain,
        "method": table["method"],
        "metric": metric,
        "value": table[metric],
        "se": table[f"{metric}_se"] if f"{metric}_se" in table.columns else float("nan"),
        "paper": [paper.get(str(m).lower(), float("nan")) for m in table["method"]],
        "data": data_label,
    })
    if f"{metric}_seed_mean" in table.columns:  # several distillation seeds: mean and sd over them
        out["seed_mean"] = table[f"{metric}_seed_mean"]
        out["seed_sd"] = table[f"{metric}_seed_sd"]
        out["n_seeds"] = table["n_seeds"]
    return out


def _markdown(df: pd.DataFrame) -> str:
    lines = ["# AWD reproduction summary", ""]
    for domain, part in df.groupby("domain", sort=False):
        dom = get_domain(domain)
        metric = part["metric"].iloc[0]
        lines += [f"## {domain} ({metric.upper()}, test split) — {part['data'].iloc[0]}", ""]
        has_paper = bool(dom.paper_reference) and part["paper"].notna().any()
        if part["data"].iloc[0].startswith("simulated") and has_paper:
            lines += ["Numbers below come from simulated data, not from the paper's data set; the paper's "
                      "column is shown for orientation only.", ""]
        if not has_paper:
            lines += ["No published number to compare with: this domain has no paper reference "
                      "(Domain.paper_reference), so the table has no paper column"
                      + (f" ({dom.paper_source})" if dom.paper_source else "") + ".", ""]
        seeds = "seed_mean" in part.columns and part["seed_mean"].notna().any()
        header = (["method", metric, "± se"] + (["mean ± sd over seeds"] if seeds else [])
                  + (["paper"] if has_paper else []))
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _, r in part.iterrows():
            cells = [str(r["method"]), f"{r['value']:.5g}", "" if pd.isna(r["se"]) else f"{r['se']:.2g}"]
            if seeds:
                cells.append(f"{r['seed_mean']:.4g} ± {r['seed_sd']:.2g} ({int(r['n_seeds'])} seeds)")
            if has_paper:
                cells.append("" if pd.isna(r["paper"]) else f"{r['paper']:.5g}")
            lines.append("| " + " | ".join(cells) + " |")
        if dom.paper_source and has_paper:
            lines += ["", f"Paper numbers: {dom.paper_source}."]
        lines.append("")
    return "\n".join(lines)


def write_summary(tables: dict[str, str | Path], configs: dict[str, dict], csv_path: str | Path,
                  md_path: str | Path) -> pd.DataFrame:
    """Write the combined summary as CSV and Markdown."""
    df = pd.concat([domain_summary(d, p, configs[d]) for d, p in tables.items()], ignore_index=True)
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(md_path) as tmp:
        tmp.write_text(_markdown(df))
    return df
