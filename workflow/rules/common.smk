# Config loading, validation and the helpers every rule file uses.
import sys
import hashlib
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from awd.config import validate as validate_config  # noqa: E402
from awd.domain import available_domains, get_domain  # noqa: E402

validate_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
DOMAINS = list(config["domains"])
_DOMAIN_OBJECTS = {d: get_domain(d, config["domain_modules"].get(d)) for d in DOMAINS}
for _d, _obj in _DOMAIN_OBJECTS.items():
    config[_d] = validate_config(config.get(_d) or {}, _obj.schema_path, where=_d)
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


def _sources_hash(folders):
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(folder)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


_LIB_HASH = _sources_hash([Path(workflow.basedir) / "awd"])
_DOMAIN_HASH = {
    d: _sources_hash([_DOMAIN_OBJECTS[d].package_dir]) for d in DOMAINS
}


def code_version(wildcards):
    """Hash of the library and the domain's sources: editing them reruns what they affect."""
    return f"{_LIB_HASH}-{_DOMAIN_HASH[wildcards.domain]}"


def torch_threads(wildcards):
    """Threads of the teacher and distillation jobs: the config's, capped by the domain."""
    cap = _DOMAIN_OBJECTS[wildcards.domain].max_torch_threads
    return min(config["threads"], cap) if cap else config["threads"]


def domain_config(wildcards):
    return config[wildcards.domain]


def uses_simulator(domain):
    return config[domain]["data"]["source"] == "mock"


def raw_input(wildcards):
    """The mock data folder when the domain simulates; nothing (external files) otherwise."""
    if uses_simulator(wildcards.domain):
        return f"results/{wildcards.domain}/raw"
    return []


def raw_dir(wildcards):
    if uses_simulator(wildcards.domain):
        return f"results/{wildcards.domain}/raw"
    return config[wildcards.domain]["data"]["root"]


def distill_results(wildcards):
    n = len(config[wildcards.domain]["distill"]["lambdas"])
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
