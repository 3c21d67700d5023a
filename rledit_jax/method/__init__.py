"""RLEdit, the method (DESIGN.md sections 3 and 4), as pure functions over pytrees.

spec.py         Spec (the static argument of every compiled program), HParams, Hypernets
sites.py        which linears are edited and how they group into hypernetworks
hypernet.py     one hypernetwork per kernel shape;  normalizer.py  its running mean/std
shift.py        keys + value-gradients -> the shift's low-rank factors (push-through solve)
losses.py       per-micro-batch CE, KL and the metrics
edit_step.py    capture, normalise, predict, apply: one edit step
sequence.py     a training sequence as one scan (the reference's truncated gradient)
unrolled.py     the gradient through the whole trajectory
train_step.py   one sequence and its Adam step: the compiled training program
evaluation.py   lifelong editing of the eval stream, then ES / GS / LS: the compiled eval program
reference_io.py the PyTorch reference's hypernetwork state dicts
"""
