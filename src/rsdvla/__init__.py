"""rsdvla: Residual Speculative Decoding of robot actions from VLAs, evaluated in LIBERO."""

__version__ = "0.1.0"
