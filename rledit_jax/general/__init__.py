"""General ability after editing: the reference's eight prompted probe tasks (RLEdit `glue_eval/`).

    result = general.evaluate(llm_config, params, kernels, tokenizer, "shared/data/general",
                              n_per_task=100, stop_ids=general.stop_ids_of(model_dir))
    result.scores["sst2"]["f1"], result.records["sst2"][0]["generated_text"]

- `tasks`: each task's prompt, gold label, candidate suffixes and answer parse (zero-shot);
- `data`: the test split of a task's JSON file;
- `encoding`: prompts and candidate suffixes tokenised as the reference's `tokenizer(text)` calls;
- `stopping`: where generation stops (the model's eos ids);
- `metrics`: correct / incorrect / invalid counts, accuracy, weighted F1, MCC (numpy);
- `evaluate`: the whole evaluation over padded fixed-shape batches.
"""

from rledit_jax.general.evaluate import Result, evaluate
from rledit_jax.general.stopping import stop_ids_of
from rledit_jax.general.tasks import ALL_TASKS, RLEDIT_TASKS, TASKS, Task

__all__ = ["ALL_TASKS", "RLEDIT_TASKS", "TASKS", "Result", "Task", "evaluate", "stop_ids_of"]
