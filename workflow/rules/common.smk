# Config loading, validation and the helpers every rule file uses.
import atexit
import importlib
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from awd import stages as awd_stages  # noqa: E402
from awd.config import (  # noqa: E402
    SIMULATED_SOURCES,
    ConfigError,
    coerce_config_overrides,
    configfile_hint,
    validate as validate_config,
    validate_domain_section,
)
from awd.distill import count_jobs  # noqa: E402
from awd.domain import available_domains, get_domain  # noqa: E402
from awd.manifest import update_manifest  # noqa: E402
from awd.pipeline import failure_summary  # noqa: E402

# nested --config values arrive as strings (YAML BaseLoader); read them as a config file would
_CONVERTED = coerce_config_overrides(config, dict(workflow.config_settings.config))


def _with_configfile_hint(err):
    """A config error, plus the --configfile form when nested --config values were given."""
    nested = {k: v for k, v in workflow.config_settings.config.items() if isinstance(v, dict)}
    return ConfigError(f"{err}\n{configfile_hint(nested)}") if nested else err


try:
    validate_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
    for _module in config["domain_modules"].values():
        importlib.import_module(_module)
    DOMAINS = list(config["domains"])
    _DOMAIN_OBJECTS = {d: get_domain(d, config["domain_modules"].get(d)) for d in DOMAINS}
    for _d, _obj in _DOMAIN_OBJECTS.items():
        config[_d] = validate_domain_section(_d, config.get(_d), _obj.schema_path)
except ConfigError as _err:
    raise _with_configfile_hint(_err) from None
_unknown = sorted(
    set(config)
    - {"domains", "domain_modules", "threads", "device", "label", *DOMAINS}
    - set(available_domains())
)
if _unknown:
    raise ValueError(
        f"config: unknown top-level keys {_unknown}; they are neither settings nor "
        f"registered domains ({available_domains()})"
    )


wildcard_constraints:
    domain="|".join(DOMAINS),
    index=r"\d+",


# What each stage depends on (awd.stages): its config slice and its code, per domain.
_SLICES = {
    d: {s: awd_stages.config_slice(o, s, config[d]) for s in awd_stages.STAGES}
    for d, o in _DOMAIN_OBJECTS.items()
}
_CODE = {
    d: {s: awd_stages.stage_code_hash(o, s) for s in awd_stages.STAGES}
    for d, o in _DOMAIN_OBJECTS.items()
}
_LIB_HASH = awd_stages.files_hash(
    sorted((Path(workflow.basedir) / "awd").glob("*.py")),
    {Path(workflow.basedir) / "awd": "awd"},
)


def stage_cfg(stage):
    """Params function: the config keys ``stage`` reads (its rerun trigger and its input)."""

    def slice_of(wildcards):
        return _SLICES[wildcards.domain][stage]

    return slice_of


def stage_code(stage):
    """Params function: the hash of the code ``stage`` runs (editing it reruns the stage)."""

    def code_of(wildcards):
        return _CODE[wildcards.domain][stage]

    return code_of


def stage_variants(stage):
    """(domain or None, extra files) for each variant of the stage's job definition, one
    generic variant for the domains without extra outputs of ``stage`` and one per domain with."""
    extras = {
        d: list(type(o).extra_outputs.get(stage, []))
        for d, o in _DOMAIN_OBJECTS.items()
    }
    return [(None, [])] + [(d, e) for d, e in extras.items() if e]


def stage_rule_name(stage, domain):
    return stage if domain is None else f"{stage}_{domain}"


def stage_domains(stage, domain):
    """The wildcard constraint of one variant of a stage rule."""
    if domain is not None:
        return domain
    plain = [d for d, e in stage_variants(stage)[1:]]
    rest = [d for d in DOMAINS if d not in plain]
    return "|".join(rest) if rest else "(?!)"


def extra_outputs(folder, names):
    """Declared extra outputs of a stage; tables and pictures go into the report."""
    out = []
    for name in names:
        path = f"{folder}/{name}"
        if Path(name).suffix in (".csv", ".png", ".svg", ".html", ".tsv"):
            path = report(
                path,
                caption="../report/extra.rst",
                category="{domain}",
                labels={"domain": "{domain}", "figure": name},
            )
        out.append(path)
    return out


def summary_data(domain):
    """What the summary says about a domain's data: its source and folder."""
    data = config[domain].get("data") or {}
    return {"source": data.get("source", "mock"), "root": data.get("root")}


def provenance_hashes():
    """Content hashes per domain: all its code, and each stage's code and config slice."""
    return {
        d: {
            "code": awd_stages.domain_code_hash(o),
            "stages": {
                s: {"code": _CODE[d][s], "config": awd_stages.config_hash(_SLICES[d][s])}
                for s in awd_stages.STAGES
            },
        }
        for d, o in _DOMAIN_OBJECTS.items()
    }


def uses_simulator(domain):
    return config[domain]["data"]["source"] in SIMULATED_SOURCES


def _refresh_manifests():
    """Manifest of every external data folder (awd.manifest), rewritten only on change."""
    if workflow.remote_exec or workflow.subprocess_exec:
        return  # the main process keeps them
    for d in DOMAINS:
        if not uses_simulator(d):
            update_manifest(config[d]["data"]["root"], f"results/{d}/inputs/manifest.tsv")


_refresh_manifests()


def announce_failure(snakemake_log):
    """onerror: the failed jobs' error lines, printed as the very last lines of the run."""
    summary = failure_summary(snakemake_log)
    if summary:
        atexit.register(print, summary, file=sys.stderr, flush=True)


def torch_threads(wildcards):
    """Threads of the teacher and distillation jobs: the config's, capped by the domain."""
    cap = _DOMAIN_OBJECTS[wildcards.domain].max_torch_threads
    return min(config["threads"], cap) if cap else config["threads"]


def raw_input(wildcards):
    """What the domain's raw data are: the mock folder the simulator writes, or the manifest
    of the external data folder (so edited, added or removed files rerun ingest)."""
    if uses_simulator(wildcards.domain):
        return f"results/{wildcards.domain}/raw"
    return f"results/{wildcards.domain}/inputs/manifest.tsv"


def raw_dir(wildcards):
    if uses_simulator(wildcards.domain):
        return f"results/{wildcards.domain}/raw"
    return config[wildcards.domain]["data"]["root"]


def distill_results(wildcards):
    """Every distillation job's results (one job per lambda path, or per seed when batched)."""
    n = count_jobs(config[wildcards.domain]["distill"])
    return expand(
        "results/{domain}/distill/lambda_{index}.json",
        domain=wildcards.domain,
        index=range(n),
    )


def domain_rule_files():
    """Optional extra rules a domain ships as domains/<name>/rules.smk."""
    files = [_DOMAIN_OBJECTS[d].package_dir / "rules.smk" for d in DOMAINS]
    return [str(f) for f in files if f.exists()]


def final_outputs():
    outputs = []
    for d in DOMAINS:
        outputs += [
            f"results/{d}/table.csv",
            f"results/{d}/wavelet.json",
            f"results/{d}/figures",
        ]
    outputs += [
        "results/tables/summary.csv",
        "results/tables/summary.md",
        "results/provenance.json",
    ]
    return outputs
