"""Clathrin-mediated endocytosis (CME): predict the auxilin signal of a pit from its clathrin trace.

Raw two-channel TIRF movies (or existing cmeAnalysis outputs) -> detection, tracking and
track processing as cmeAnalysis does it -> 40-point clathrin traces and the per-cell z-scored
auxilin target -> LSTM teacher -> 1D AWD -> top-coefficient linear heads.
"""
from domains.cme.domain import CMEDomain

__all__ = ["CMEDomain"]
