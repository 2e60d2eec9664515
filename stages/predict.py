"""Stage `predict`: batch prediction with a model directory (what stage=teacher or stage=task exported) over a
file: one JSON Lines record per input example, in input order (tinykd/predict.py says what each holds).

    python -m tinykd stage=predict task=sst2 model=<dir> input=texts.txt output=predictions.jsonl
    # predict.backend=onnx | int8: the model's ONNX export (<dir>/onnx/, written by stage=export)

The task says how an example is read (its type, its columns, task.max_seq_len); the model says what its
outputs are called (its config's id2label). Everything the command line can get wrong is refused before the
model loads.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tinykd import build, models, onnxexport, predict, tasks
from tinykd.choices import QA, SEQUENCE, TOKEN
from tinykd.data.batches import length_sorted_batches
from tinykd.engine import pick_device
from tinykd.errors import TinyKDError


def input_columns(cfg) -> predict.Columns:
    """What each example is read from: a GLUE task's GLUE column names (sst2: sentence), or the columns your
    own data's task.* names."""
    t = cfg.task
    if not tasks.described_in_config(t) and t.name in tasks.TASKS:
        names = tuple(tasks.get_task(t.name).glue.hub_text_keys)
        return predict.Columns(SEQUENCE, names, (None,) * len(names))
    if t.type == TOKEN:
        return predict.Columns(TOKEN, (t.tokens_column,), ("task.tokens_column",))
    if t.type == QA:
        return predict.Columns(QA, (t.question_column, t.context_column),
                               ("task.question_column", "task.context_column"))
    return predict.Columns(SEQUENCE, tuple(t.text_columns), ("task.text_columns",) * len(t.text_columns))


def task_problem_type(cfg) -> str:
    t = cfg.task
    return tasks.TASKS[t.name].problem_type if not tasks.described_in_config(t) and t.name in tasks.TASKS \
        else t.problem_type


def load_model(cfg, source: str, config, task_type: str, problem_type: str):
    """The PyTorch model in the directory, or its ONNX export run by ONNX Runtime (predict.backend)."""
    backend = cfg.predict.backend
    if backend == "pytorch":
        num_labels = 2 if task_type == QA else config.num_labels
        return models.load_classifier(source, num_labels, None, "model", problem_type, task_type)
    path = Path(source) / "onnx" / onnxexport.FILES[backend]
    if not path.is_file():
        raise TinyKDError(f"predict.backend={backend} runs {path}, which does not exist.",
                          f"export the model first: python -m tinykd stage=export model={cfg.model} "
                          f"task={cfg.task.name}; or use predict.backend=pytorch.")
    return onnxexport.OnnxModel(path, config, threads=cfg.engine.num_threads)


def run(cfg) -> dict:
    build.start(cfg)
    t0 = time.perf_counter()
    # model, input and output are set (config.check)
    input_path, output_path = Path(cfg.input).expanduser(), Path(cfg.output).expanduser()
    if output_path.resolve() == input_path.resolve() or output_path.is_dir():
        raise TinyKDError(f"output={cfg.output} is {'the input file' if not output_path.is_dir() else 'a directory'}.",
                          "set output=<a new file path> (e.g. predictions.jsonl).")

    # the model: a trained head of the task's type; its class names and problem type are its own
    columns = input_columns(cfg)
    source, config = build.trained_model(cfg.model, columns.task_type, cfg.task.name)
    problem_type = getattr(config, "problem_type", None) or task_problem_type(cfg)

    # the input, every row checked before the model loads; then the backend's model
    examples = predict.read_examples(input_path, columns, cfg.task.name)
    tokenizer = models.load_tokenizer(source, "model")
    model = load_model(cfg, source, config, columns.task_type, problem_type)
    # ONNX Runtime runs on the CPU: engine.device=auto means the CPU for it (cuda is refused by OnnxModel.to)
    device = pick_device("cpu" if cfg.predict.backend != "pytorch" and cfg.engine.device == "auto"
                         else cfg.engine.device)
    model = model.to(device).eval()

    # features: one row per text; a token task's windows of whole words; a QA task's context windows
    t = cfg.task
    if columns.task_type == TOKEN:
        feats, notes = predict.token_features(examples, tokenizer, t.max_seq_len)
    elif columns.task_type == QA:
        feats, notes = predict.qa_features(examples, tokenizer, max_len=t.max_seq_len, doc_stride=t.doc_stride,
                                           max_question_len=t.max_question_len)
    else:
        feats, notes = predict.text_features(examples, tokenizer, t.max_seq_len)

    # the loop: batches of similar length (shortest first), each output put back at its row's position
    batch_size = cfg.predict.batch_size
    outputs: list = [None] * len(feats)
    batches = length_sorted_batches(feats, tokenizer, batch_size)
    with torch.no_grad():
        for positions, batch in tqdm(batches, total=-(-len(feats) // batch_size), desc="predict", unit="batch",
                                     disable=not cfg.progress):
            inputs = {k: v.to(device) for k, v in models.model_inputs(model, batch).items()}
            logits = models.head_logits(model(**inputs)).float().cpu().numpy()
            lengths = batch["attention_mask"].sum(1).tolist()  # padding is on the right
            for row, (i, n) in enumerate(zip(positions, lengths)):
                outputs[i] = logits[row] if logits.ndim == 2 else logits[row, :n]  # per token: padding cut off
    predict.check_finite(outputs, predict.example_of(feats, columns.task_type))

    # records, in input order
    names = predict.label_names(config)
    if columns.task_type == TOKEN:
        records = predict.token_records(examples, feats, outputs, names)
    elif columns.task_type == QA:
        search = tasks.AnswerSearch(t.n_best, t.max_answer_len, t.version_2_with_negative)
        records = predict.qa_records(len(examples), feats, outputs, search)
    else:
        records = predict.text_records(np.stack(outputs), names, problem_type)
    assert len(records) == len(examples)
    predict.write_jsonl(output_path, records)

    seconds = time.perf_counter() - t0
    counted = {SEQUENCE: f"{notes.truncated} truncated to task.max_seq_len={t.max_seq_len} tokens",
               TOKEN: f"{notes.windowed} split into windows of task.max_seq_len={t.max_seq_len} tokens",
               QA: f"{notes.truncated} questions truncated to task.max_question_len={t.max_question_len} tokens, "
                   f"{notes.windowed} contexts split into windows"}[columns.task_type]
    print(f"[tinykd] predicted {len(examples)} examples ({counted}) with {cfg.predict.backend} in {seconds:.1f} s: "
          f"{output_path}")
    return {"stage": "predict", "task": t.name, "model": str(cfg.model), "backend": cfg.predict.backend,
            "examples": len(examples), "truncated": notes.truncated, "windowed": notes.windowed,
            "output": str(output_path), "seconds": round(seconds, 2)}
