"""`bin/bench`: seconds, memory and FLOPs of the compiled programs against the torch passes of the same work.

`report.table(config)` is the table (how to read it: `report.py`'s docstring); `timing` compiles and
times a program; `torch_passes` times what the PyTorch reference's steps run; `reference_code` the
official code itself (with `--reference`).
"""
