"""Relax lowering passes that replace recognized layers with edgekit's hand-written kernels."""
from edgekit.compiler.lower.binary import lower_binary_layers

__all__ = ["lower_binary_layers"]
