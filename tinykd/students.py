"""Where a student starts: its config from `cfg.student` (null sizes taken from the teacher), and its weights as
`student.init` says, for every stage that makes one: random (seeded), the teacher's embeddings and layers
(`teacher_layers`, DistilBERT), the teacher pruned to the student's shape (`pruned`, tinykd/prune.py), the
general-distilled student (`general`), or a model directory; a BiLSTM student's input embeddings.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Optional

import torch

from tinykd import models
from tinykd.choices import SEQUENCE
from tinykd.config import sample_size
from tinykd.data.batches import Batcher
from tinykd.errors import TinyKDError
from tinykd.run import check_upstream, command_line, given_overrides
from tinykd.tasks import TaskSpec


def student_config(cfg, teacher_config, spec: Optional[TaskSpec] = None):
    """The student's HF config from `cfg.student`: null sizes take the teacher's value (layers:
    half the teacher's, rounded up); a task spec adds its labels and problem type."""
    config = _student_config(cfg, teacher_config, spec)
    if spec is not None and spec.type == SEQUENCE:  # token and QA heads have no problem type
        config.problem_type = spec.problem_type
    return config


def _student_config(cfg, teacher_config, spec: Optional[TaskSpec]):
    s, tc = cfg.student, teacher_config
    layers = s.num_layers if s.num_layers is not None else math.ceil(tc.num_hidden_layers / 2)
    labels = dict(num_labels=spec.num_labels, label_names=spec.label_names) if spec is not None else {}
    if s.arch == "bilstm":
        from tinykd.bilstm import BiLSTMConfig

        kw = models.label_kwargs(spec.num_labels, spec.label_names, spec.problem_type) if spec is not None else {}
        return BiLSTMConfig(vocab_size=tc.vocab_size, embedding_dim=s.embedding_dim or tc.hidden_size,
                            hidden_size=s.hidden_size or tc.hidden_size, num_layers=s.num_layers or 1,
                            representation_size=s.representation_size or tc.hidden_size, dropout=s.dropout,
                            pad_token_id=getattr(tc, "pad_token_id", 0) or 0, **kw)
    if s.arch == "distilbert":
        fixed = {"hidden_size": tc.hidden_size, "num_heads": tc.num_attention_heads,
                 "intermediate_size": tc.intermediate_size}
        odd = {k: getattr(s, k) for k, v in fixed.items() if getattr(s, k) not in (None, v)}
        if odd:
            raise TinyKDError(f"A DistilBERT student has the teacher's shape ({fixed}); got student.{odd}.",
                              "leave those keys null with student.arch=distilbert, or use student.arch=bert.")
        return models.distilbert_config(tc, num_layers=layers, dropout=s.dropout, **labels)
    return models.student_config(
        tc, num_layers=layers, hidden_size=s.hidden_size or tc.hidden_size,
        num_heads=s.num_heads or tc.num_attention_heads, intermediate_size=s.intermediate_size or tc.intermediate_size,
        dropout=s.dropout, **labels)


def general_student(cfg, teacher, head: str, corpus=None, tokenizer=None):
    """The general stage's student: random (seeded); with `student.general_init=teacher_layers` (or
    `student.init=teacher_layers`), the teacher's embeddings and layers `student.init_layers` copied in
    (DistilBERT); with `pruned` (either key), the teacher pruned to the student's shape, ranked on
    `corpus` blocks. `head`: none | mlm. Returns (the student, the teacher layers it was pruned from or
    None)."""
    s = cfg.student
    student = models.random_student(student_config(cfg, teacher.config), cfg.seed, head=head)
    inits = (s.general_init, s.init)
    if "pruned" in inits:
        return student, pruned_student(cfg, teacher, student, corpus, tokenizer, cfg.train.general.eval_batch_size)
    if "teacher_layers" in inits:
        copied = models.init_from_teacher_layers(student, teacher, s.init_layers)
        print(f"[tinykd] student initialised from the teacher: embeddings and layers {copied}")
    return student, None


def pruned_student(cfg, teacher, student, ds, tokenizer, batch_size: int):
    """`student.init=pruned`: copy into `student` the teacher's units of highest activation importance on
    `student.prune_examples` examples of `ds` (the first of the seeded shuffle), `student.init_layers` (if
    set) fixing the layers kept (tinykd/prune.py). Returns the teacher layers kept (from 1), for
    `distill.layer_map=kept`."""
    from tinykd import prune
    from tinykd.engine import pick_device

    prune.check_shape(student.config, teacher.config)
    if cfg.student.init_layers is not None:  # validated against both depths, as for teacher_layers
        models.check_init_layers(cfg.student.init_layers, teacher.config.num_hidden_layers,
                                 student.config.num_hidden_layers)
    n = sample_size(cfg, "student.prune_examples", len(ds), "calibration examples")
    batcher = Batcher(ds, tokenizer, batch_size, cfg.seed, rank=0, world_size=1)
    batches = itertools.islice(batcher.iterate(), math.ceil(n / batch_size))
    # the last batch is cut to n examples: exactly student.prune_examples are measured
    sample = ({k: v[: n - i * batch_size] for k, v in b.items()} for i, b in enumerate(batches))
    device = pick_device(cfg.engine.device)
    plan = prune.prune(teacher, student, sample, layers=cfg.student.init_layers, device=device)
    print(f"[tinykd] student pruned from the teacher on {n} examples: {plan.summary()}")
    return [i + 1 for i in plan.layers]


def bilstm_student(cfg, teacher, tokenizer, spec):
    """A BiLSTM classifier for `cfg.student`, its input embeddings from `student.embeddings`:
    the teacher's (SVD-reduced to embedding_dim when narrower), GloVe, or random."""
    from tinykd import augment
    from tinykd.bilstm import glove_embeddings, svd_reduce

    config = student_config(cfg, teacher.config, spec)
    student = models.random_student(config, cfg.seed, head="classifier")
    kind = cfg.student.embeddings
    if kind == "teacher":
        table = teacher.get_input_embeddings().weight
        if config.embedding_dim != table.size(1):
            table = svd_reduce(table, config.embedding_dim)
        note = f"the teacher's input embeddings ({teacher.config.hidden_size} -> {config.embedding_dim} by SVD)" \
            if config.embedding_dim != teacher.config.hidden_size else "the teacher's input embeddings"
    elif kind == "glove":
        vectors = augment.load_word_vectors(cfg.augment.vectors, None)
        table, covered = glove_embeddings(tokenizer.get_vocab(), vectors, config.embedding_dim, cfg.seed)
        note = f"GloVe ({covered} of {len(tokenizer)} tokens; the rest random)"
    else:  # random (config.check refuses any other value)
        table, note = None, "random"
    if table is not None:
        with torch.no_grad():
            student.get_input_embeddings().weight[: table.size(0)].copy_(table[: config.vocab_size])
    print(f"[tinykd] BiLSTM student: {sum(p.numel() for p in student.parameters()) / 1e6:.2f}M parameters, "
          f"embeddings from {note}")
    return student


def general_command() -> str:
    """The `stage=general` command that makes the student this task run looks for: this command line's
    options that name it (debug, name, teacher, student, paths.runs, runs.general)."""
    naming = ("debug", "name", "teacher", "student", "paths.runs", "runs.general")
    keep = [o for o in given_overrides() or [] if o.split("=", 1)[0].lstrip("+~") in naming
            or o.startswith(("teacher.", "student.")) and not o.startswith("student.init=")]
    return command_line(["stage=general", *keep])


def task_student(cfg, spec: TaskSpec, teacher, teacher_tok, train_ds):
    """The student classifier, initialised as `student.init` says (its vocabulary must be the teacher's), and
    the teacher layers it was pruned from (student.init=pruned; else None)."""
    init = cfg.student.init
    if init in ("random", "teacher_layers", "pruned"):
        student = models.random_student(student_config(cfg, teacher.config, spec), cfg.seed, head=spec.type)
        if init == "teacher_layers":  # the fine-tuned teacher's embeddings and layers (its classifier is not copied)
            copied = models.init_from_teacher_layers(student, teacher, cfg.student.init_layers)
            print(f"[tinykd] student initialised from the fine-tuned teacher: embeddings and layers {copied}")
        elif init == "pruned":  # the fine-tuned teacher, head included, pruned on a sample of the training data
            return student, pruned_student(cfg, teacher, student, train_ds, teacher_tok,
                                           cfg.train.task_prediction.eval_batch_size)
        return student, None
    path = Path(cfg.stage.general_dir if init == "general" else init)
    if not (path / "config.json").is_file():
        if init == "general":
            raise TinyKDError(
                f"student.init=general, but there is no general-distilled student at {path}.",
                f"run `{general_command()}` first, or set student.init=pruned (the fine-tuned teacher cut to "
                "the student's shape: no general stage), random, or <model directory>.",
            )
        raise TinyKDError(f"student.init path {path} does not exist or has no config.json.",
                          "set student.init=general, random, teacher_layers, or an existing model directory.")
    if init == "general":
        check_upstream(cfg, path.parent, "general")  # distilled from another teacher: refused, both named
    check_vocab = models.load_tokenizer(str(path), "student")
    models.check_same_vocab(check_vocab, teacher_tok, str(path), "teacher")
    return models.load_classifier(str(path), spec.num_labels, spec.label_names, "student", spec.problem_type,
                                  spec.type), None
