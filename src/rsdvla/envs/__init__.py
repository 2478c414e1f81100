"""Simulation environments. `rsdvla.envs.libero` wraps LIBERO (imported lazily)."""

from rsdvla.envs.libero import MAX_STEPS, SUITES, LiberoEnv, LiberoTask, get_task, make_env

__all__ = ["MAX_STEPS", "SUITES", "LiberoEnv", "LiberoTask", "get_task", "make_env"]
