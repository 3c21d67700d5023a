"""The planning compiles the real programs from shapes alone; memory must not grow with T x dense."""

from rledit_jax import planning
from tests.config_files import load_config


def config():
    c = load_config("tiny")
    # fc_out is [2048, 128]: a dense edited matrix (1 MiB) dwarfs one step's factors (N = 9 rows).
    c.model.tiny.n_embd, c.model.tiny.n_inner, c.model.tiny.n_layer = 128, 2048, 2
    c.model.edit_sites = ["transformer.h.1.mlp.fc_out"]
    c.data.n_edits, c.data.batch_size = 3, 3
    c.hparams.rank, c.hparams.back_depth = 16, 2
    return c


def test_unrolled_memory_grows_with_factors_not_dense_matrices():
    c = config()
    llm, layout, rows = planning.plan(c, modes=["reference", "unrolled"], steps_list=[4, 8], seq_len=16, answer_len=3)
    d_in, d_out = layout.sites[0].shape
    dense = d_in * d_out * 4
    by = {(r.program, r.mode, r.steps): r for r in rows}
    for mode in ("reference", "unrolled"):
        small, large = by[("train sequence", mode, 4)], by[("train sequence", mode, 8)]
        growth = (large.temp_bytes + large.out_bytes) - (small.temp_bytes + small.out_bytes)
        # 4 more steps; storing their dense edited matrices would add 4 x dense.
        assert growth < 0.25 * 4 * dense, (mode, growth, dense)
        assert large.flops > 0
    assert by[("edit step", "-", 1)].peak_bytes > 0
    table = planning.format_table(llm, layout, c, rows, 16, 3)
    assert "unrolled" in table and "edit step" in table


def test_plan_of_a_llama_with_two_site_shapes():
    c = load_config("tiny_llama")
    c.model.tiny.num_hidden_layers = 2
    c.model.edit_sites = ("model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj")
    c.data.n_edits, c.data.batch_size = 3, 3
    c.hparams.rank, c.hparams.back_depth = 8, 2
    llm, layout, rows = planning.plan(c, modes=["reference"], steps_list=[2], seq_len=16, answer_len=3)
    assert llm.model_type == "llama" and len(layout.groups) == 2
    assert [r.program for r in rows] == ["train sequence", "edit step"] and all(r.peak_bytes > 0 for r in rows)
