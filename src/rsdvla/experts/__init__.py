"""Scripted experts that solve LIBERO tasks from privileged state (to collect demonstrations)."""

from rsdvla.experts.scripted import ExpertConfig, Phase, PickPlaceExpert, PickPlaceGoal, parse_goal

__all__ = ["ExpertConfig", "Phase", "PickPlaceExpert", "PickPlaceGoal", "parse_goal"]
