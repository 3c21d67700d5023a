"""The methods RLEdit is compared with (DESIGN.md section 4b "Methods"), on RLEdit's capture,
normaliser, shift, training step and evaluation (`rledit_jax.method`).

methods.py     what each `config.method` is; its hyperparameters and shift
per_batch.py   MEND's and MALMEN's training: each batch on the unedited model, one Adam step per batch
training.py    a method's training over the training stream, in its scheme (per_batch or sequence)
retrain.py     lifelong editing with a fresh network retrained on the edited model every k steps
finetune.py    ft: Adam on the edit sites' kernels, batch after batch
meter.py       wall time per phase apart from compilation, and the programs' peak memory
lifelong.py    one method's whole job: train, edit the eval stream, score, write the results
"""
