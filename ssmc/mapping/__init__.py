"""Mapping a neuro-level network onto cores: netlist view, usage and traffic accounting,
structural blocks, partition solvers (CP-SAT and baselines) and mesh placement.
The passes `partition` and `place` and the verifier call into here (docs/mapping.md)."""
