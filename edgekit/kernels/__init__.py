"""Hand-written TIR kernels (generated per shape) that Relax lowering passes call through call_tir."""
