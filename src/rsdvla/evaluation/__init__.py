"""Evaluation: offline (hidden-state store) and LIBERO (simulator) runners, aggregation, sweeps."""
