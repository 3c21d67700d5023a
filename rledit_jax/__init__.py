"""rledit-jax: RLEdit lifelong knowledge editing of LLMs in JAX/Flax.

Packages: `models` (Flax causal LMs over HF-named params, HF interop), `data` (facts, tokenisation,
fixed-shape step batches), `method` (RLEdit as pure functions and its compiled programs),
`editing` (the edit library: a model edited batch by batch, with history, rollback and export),
`cli` (the entry points behind `bin/`); `run.setup` builds a run from a config.

Glossary (shapes as `[...]`; T steps, M micro-batches of B rows of L tokens per step, A answer tokens):

  params     the LLM's weights: a nested dict keyed by HF module names; a linear's kernel is
             `[d_in, d_out]` (the transpose of HF's weight). Frozen: never differentiated or saved.
  site       an edited linear, named as in HF (`transformer.h.22.mlp.fc_out`).
  layout     `SiteLayout`: the sites and their grouping by kernel shape `(d_in, d_out)`; one
             hypernetwork (and one normaliser) per shape, each site an index into its tables.
  kernels    `{site: [d_in, d_out] float32}`: the sites' current edited matrices, replacing their
             kernels in params for every forward (float32 even on bf16 models).
  captures   per site, the keys (the site's inputs) `[M, R, d_in]` and value-gradients (the loss's
             gradient w.r.t. its outputs) `[M, R, d_out]` of a step's edit batch, R = B*A answer rows
             (or B*L), with a row mask `[M, R]`.
  factors    a shift as low-rank factors `(K [N, d_in], C [N, d_out])`, N = M*R: S = K^T C.
  hypernets  `Hypernets(nets, norms)`: the hypernetworks' params and their running normaliser
             statistics, keyed by kernel shape.
  spec       `Spec`: everything static in a compiled program (model config, layout, hparams, answer
             lengths, gradient mode, metric, trace flag); the single static argument of every program.
  batches    `StepBatches`: edit / equiv / unrel `KindBatch`es of int32 arrays `[T, M, B, L]`.
"""
