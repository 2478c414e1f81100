"""A minimal ``prismatic`` package for OpenVLA-OFT's published model code (``modeling_prismatic.py``).

The checkpoints' ``modeling_prismatic.py`` imports ``prismatic.training.train_utils`` (the action
masks) and ``prismatic.vla.constants`` (LIBERO's chunk and action sizes, the stop token). The full
``prismatic`` package of moojink/openvla-oft needs draccus, TensorFlow and more, and pins torch 2.2;
this folder holds just those two modules, written for this project from their contract (the
constants are LIBERO's facts; ``tests/test_oft_shim.py`` checks both against the published ones),
and is put on ``sys.path`` only when no ``prismatic`` is installed (``oft_loading.ensure_prismatic``).
"""
