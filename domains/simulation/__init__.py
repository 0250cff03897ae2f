"""The AWD paper's simulation study as a workflow domain (a known db5 ground truth)."""
from domains.simulation.domain import SimulationDomain

__all__ = ["SimulationDomain"]
