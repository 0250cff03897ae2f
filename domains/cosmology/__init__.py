"""Cosmology domain: weak-lensing convergence maps (MassiveNuS layout) -> Omega_m."""
from domains.cosmology.domain import CosmologyDomain

__all__ = ["CosmologyDomain"]
