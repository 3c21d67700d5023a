"""`bin/bench`: seconds, memory and FLOPs of the compiled programs against their LLM floors.

`report.table(config)` is the table (how to read it: `report.py`'s docstring); `timing` compiles and
times a program; `floors` are the LLM passes a step cannot avoid.
"""
