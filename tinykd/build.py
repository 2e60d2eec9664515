"""Small functions that turn one part of the config into plain objects for the stages: a model
source, the task and its splits, a list of layer matches, a distiller, a phase's loop, the augmentation's
candidate sources.

The models, data, losses and layer maps they call take plain values. Besides the stages and
these, `cfg` is read only by the plumbing around them: `config` (the schemas and the start-up
check, which has already refused unknown values and impossible combinations by the time these
run), `cli` (dispatch), `students` (where a student starts: `student.*`), `modelcard.student_card`
(the card's facts), `engine.build_engine` and `loop.PhaseLoop` (the engine node and a phase's
train.<block>), `run` (saving and comparing configs, the metrics logger) and `sweep` (Hydra's sweep
callback).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch

from tinykd import attention, data, models, teachers
from tinykd.choices import QA, RELATIONS
from tinykd.data.batches import Batcher
from tinykd.distiller import (Distiller, RelationMatch, check_attention_capture, check_compatible, qkv_projections,
                              use_attention_target)
from tinykd.engine import build_engine
from tinykd.errors import TinyKDError
from tinykd.layermap import FEATURES, LayerMatch, format_table, resolve_matches
from tinykd.loop import PhaseLoop
from tinykd.run import check_upstream, seed_everything
from tinykd.tasks import TaskSpec


def teacher_source(cfg) -> str:
    """A local directory (or hub id) for the pretrained teacher. `teacher.path` wins; without one, the
    tiny model `teacher.tiny` describes is built here (once, under `teacher.tiny.dir`). An installed
    `teacher.package` stands in for a hub id, never for a local directory."""
    t = cfg.teacher
    if t.path is None:
        if t.tiny is None:
            raise TinyKDError("No teacher: teacher.path and teacher.tiny are both null.",
                              "set teacher.path=<a model directory or hub id>, or choose teacher=tiny.")
        s = t.tiny
        return models.build_tiny_model(
            s.dir, num_layers=s.num_layers, hidden_size=s.hidden_size, num_heads=s.num_heads,
            intermediate_size=s.intermediate_size, vocab_size=s.vocab_size, vocab_source=s.vocab_source, seed=s.seed,
        )
    if t.tiny is not None:
        print(f"[tinykd] teacher.path={t.path} is set: the tiny teacher of teacher={t.name} is not built")
    package = None if Path(t.path).expanduser().is_dir() else t.package
    return models.resolve_source(t.path, package, "teacher")


def mlm_teacher(cfg):
    """The masked-LM teacher of `distill=distilbert`, loaded: (source, model). From
    `distill.mlm_teacher`, else the pretrained teacher when it has a masked-LM head, else what
    `stage=mlm_head` exported for it."""
    what = "masked-LM teacher"
    given = cfg.distill.mlm_teacher
    if given:
        source = models.resolve_source(given, None, what, "distill.mlm_teacher")
        return source, models.load_masked_lm(source, what)
    source = teacher_source(cfg)
    try:
        return source, models.load_masked_lm(source, what)
    except TinyKDError:  # no trained head: look for stage=mlm_head's export
        pass
    fitted = Path(cfg.runs.mlm_head) / "mlm"
    if (fitted / "config.json").is_file():
        print(f"[tinykd] masked-LM teacher: {fitted} (stage=mlm_head's head on {source})")
        return str(fitted), models.load_masked_lm(str(fitted), what)
    raise TinyKDError(
        f"distill=distilbert needs a masked-LM teacher, but {source} has no masked-LM head and there is no "
        f"stage=mlm_head export at {fitted}.",
        "run `python -m tinykd stage=mlm_head` first (same teacher/debug options), or set "
        "distill.mlm_teacher=<a masked-LM directory or hub id>.",
    )


def given_finetuned_teacher(cfg, spec: TaskSpec) -> Optional[str]:
    """`teacher.path` when it is already a fine-tuned classifier for this task (it then needs no
    `stage=teacher`), else None (a pretrained encoder, or the tiny test teacher). A classifier with
    another number of outputs than the task's classes is refused: it was fine-tuned for another task."""
    if cfg.teacher.path is None:
        return None
    own = Path(cfg.runs.teacher) / "teacher" / "config.json"
    try:
        source = teacher_source(cfg)
        config = models.model_config(source)
    except TinyKDError:
        if own.is_file():  # e.g. a hub id while offline: stage=teacher's export of it stands
            return None
        raise
    if not teachers.is_finetuned_classifier(config, config.num_labels, spec.type):
        return None
    if config.num_labels != spec.num_labels:
        names = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
        raise TinyKDError(
            f"The teacher at {source} is a classifier with {config.num_labels} outputs {names}, but task {spec.name} "
            f"has {spec.num_labels} classes {list(spec.label_names or [])}.",
            "use a teacher fine-tuned on this task's labels, or teacher.path=<its pretrained encoder> to fine-tune one "
            "with stage=teacher.")
    return source


def finetuned_teacher_dir(cfg, spec: TaskSpec) -> str:
    """The fine-tuned teacher for task distillation: `stage.teacher_dir` when set; else `teacher.path`
    when it is a fine-tuned classifier for the task; else what `stage=teacher` exported."""
    if cfg.stage.teacher_dir:
        path = Path(cfg.stage.teacher_dir)
    else:
        given = given_finetuned_teacher(cfg, spec)
        if given is not None:
            return given
        path = Path(cfg.runs.teacher) / "teacher"
    if (path / "config.json").is_file():
        if not cfg.stage.teacher_dir:  # runs.teacher's: one made for other data is refused (a teacher_dir the
            check_upstream(cfg, path.parent, "teacher")  # user names is taken as given)
    else:
        raise TinyKDError(
            f"No fine-tuned teacher at {path}.",
            f"run `python -m tinykd stage=teacher task={cfg.task.name}` first (same teacher/debug options), set "
            "stage.teacher_dir=<a fine-tuned sequence-classification model directory>, or teacher.path=<a fine-tuned "
            "classifier for this task> (README, \"Your own data\").",
        )
    return str(path)


def finetuned_teacher(cfg, spec: TaskSpec):
    """The fine-tuned teacher for task distillation, loaded and frozen: (its directory or hub id, the
    model). Its classes are matched to the task's by name (`teachers.align_labels`): a head in
    another order is reordered, one with other names or another count refused."""
    source = finetuned_teacher_dir(cfg, spec)
    config = models.model_config(source)
    if config.num_labels != spec.num_labels and not spec.is_qa:
        teachers.label_permutation(config.id2label, spec.label_names, source=source)  # raises: the counts differ
    teacher = models.load_classifier(source, spec.num_labels, None, "teacher", spec.problem_type, spec.type)
    # a QA head's two outputs are the answer's start and end, not classes
    perm = None if spec.is_qa else teachers.align_labels(teacher, spec.label_names, source=source)
    if perm is not None:
        print(f"[tinykd] teacher {source}: its classes reordered to the task's by name "
              f"({[teacher.config.id2label[i] for i in range(spec.num_labels)]}; teacher outputs {perm})")
    return source, models.freeze(teacher)


def data_cache(cfg) -> str:
    """Where featurised splits and the corpus are cached (`paths.cache`/datasets; the raw files' own cache in
    its raw/)."""
    return str(Path(cfg.paths.cache) / "datasets")


def task_spec(cfg) -> TaskSpec:
    """The task: a GLUE task's registry entry, or (your own data) one built from `task.*` and the training split."""
    return data.build_spec(cfg.task, data_cache(cfg))


def task_split(cfg, spec: TaskSpec, tokenizer, split: str, *, limit: Optional[int] | str = "config"):
    """A split (train, dev or test) of the task, featurised (`data.load_split`). `limit`: the first N rows; by
    default task.train_limit / task.dev_limit (none for test)."""
    if limit == "config":
        # an augmented set is used whole: stage=augment already applied train_limit to its sources
        limit = {"train": None if cfg.task.augmented else cfg.task.train_limit, "dev": cfg.task.dev_limit}.get(split)
    return data.load_split(spec, split, tokenizer, cfg.task, data_cache(cfg), limit=limit,
                           augmented=cfg.task.augmented).dataset


def transfer_split(cfg, spec: TaskSpec, tokenizer) -> data.Split:
    """task.transfer's rows, featurised with placeholder labels, and what reading them counted
    (`data.load_transfer`)."""
    return data.load_transfer(spec, tokenizer, cfg.task, data_cache(cfg))


def corpus(cfg, tokenizer):
    return data.load_corpus(
        tokenizer, corpus_dir=cfg.paths.corpus_dir, patterns=list(cfg.corpus.files), exclude=list(cfg.corpus.exclude),
        max_lines=cfg.corpus.max_lines, max_len=cfg.corpus.max_seq_len, cache_dir=data_cache(cfg),
    )


def matches(cfg, n_teacher: int, n_student: int, features: Sequence[str] = FEATURES,
            kept: Optional[Sequence[int]] = None) -> list[LayerMatch]:
    """The layer matches of `distill.*`; `kept`: the teacher layers (from 1) a pruned student was cut from,
    which `distill.layer_map=kept` maps to."""
    w = cfg.distill.weights
    weights = {f: getattr(w, f) for f in features}
    layers = list(cfg.distill.layers) if cfg.distill.layers is not None else None
    if cfg.distill.layer_map == "kept":
        layers = None if kept is None else list(kept)
    found = resolve_matches(cfg.distill.layer_map, n_teacher, n_student, weights, layers)
    if not found:  # e.g. distill=minilm: the attention relations alone
        print(f"[tinykd] no layer matches: distill.weights.{{{','.join(features)}}} are 0")
        return found
    print(f"[tinykd] layer map ({cfg.distill.layer_map}; teacher {n_teacher} layers, student {n_student}):")
    print(format_table(found))
    return found


def distiller(cfg, student, teacher, *, capture: bool = True, kept: Optional[Sequence[int]] = None):
    """Matches, projections, attention capture and the attention-relation match (`relation_match`) for a
    student/teacher pair, validated (with `capture`, by one short forward of each model that the attention
    maps are really captured)."""
    found = matches(cfg, teacher.config.num_hidden_layers, student.config.num_hidden_layers, kept=kept)
    check_compatible(student.config, teacher.config, found, cfg.distill.attention_heads, cfg.distill.attention_target)
    for model, role in ((teacher, "teacher"), (student, "student")) if capture else ():
        check_attention_capture(model, found, role)  # refuse, never skip, an attention map that is not captured
    for m in (teacher, student):
        use_attention_target(m, cfg.distill.attention_target)
    # only the mapped layers return attention maps; the others run the fused kernel
    attention.capture_layers(teacher, [m.teacher_layer for m in found if m.feature == "attention"])
    attention.capture_layers(student, [m.student_layer for m in found if m.feature == "attention"])
    relation, projections = relation_match(cfg, student, teacher)
    return Distiller(found, student.config.hidden_size, teacher.config.hidden_size, cfg.distill.attention_heads,
                     cfg.distill.mask_padding, relation, projections)


def relation_match(cfg, student, teacher):
    """MiniLMv2's attention-relation transfer when `distill.weights.relation` > 0: (the match, (the teacher's,
    the student's) query, key and value projections), validated against both models; else (None, None).
    The teacher layer is `distill.relation_layer` (null: its last), the student's its last; R relation heads
    (`distill.relation_heads`, null: the teacher's attention heads) must divide both models' widths."""
    d = cfg.distill
    if not d.weights.relation:
        return None, None
    n_teacher = teacher.config.num_hidden_layers
    layer = d.relation_layer if d.relation_layer is not None else n_teacher
    if not 1 <= layer <= n_teacher:
        raise TinyKDError(f"distill.relation_layer={layer}, but the teacher has layers 1..{n_teacher}.",
                          f"set distill.relation_layer to a value in 1..{n_teacher}, or null (its last layer).")
    relations = tuple(dict.fromkeys(d.relations))
    if not relations:
        raise TinyKDError("distill.relations is empty, but distill.weights.relation > 0.",
                          f"set distill.relations to a list of {', '.join(RELATIONS)}, or distill.weights.relation=0.")
    t_qkv = qkv_projections(teacher, layer, "teacher")
    s_qkv = qkv_projections(student, student.config.num_hidden_layers, "student")
    heads = d.relation_heads if d.relation_heads is not None else teacher.config.num_attention_heads
    widths = {"teacher": t_qkv[0].out_features, "student": s_qkv[0].out_features}
    if any(w % heads for w in widths.values()):
        common = math.gcd(*widths.values())
        fits = [r for r in range(1, common + 1) if common % r == 0]
        where = "" if d.relation_heads is not None else " (distill.relation_heads=null: the teacher's attention heads)"
        raise TinyKDError(
            f"{heads} relation heads{where} must divide both widths, but the teacher's queries are {widths['teacher']} "
            f"wide and the student's {widths['student']}.",
            f"set distill.relation_heads to one of {', '.join(map(str, fits))} (each divides both).")
    match = RelationMatch(layer, student.config.num_hidden_layers, heads, relations, d.weights.relation)
    print(f"[tinykd] {match.describe()}")
    return match, (t_qkv, s_qkv)


def total_steps(hp, batches_per_epoch: int) -> int:
    """Optimizer steps for a phase with settings `hp` (a train.<block>): `max_steps`, or `epochs` passes
    (the last partial step counted)."""
    if hp.max_steps > 0:
        return hp.max_steps
    steps = math.ceil(hp.epochs * batches_per_epoch / hp.grad_accum)
    if steps <= 0:
        raise TinyKDError("The phase has zero steps.", "set train.<phase>.max_steps or epochs > 0.")
    return steps


def start(cfg) -> None:
    """What every stage does first: the thread count (engine.num_threads), then every RNG seeded."""
    if cfg.engine.num_threads:
        torch.set_num_threads(cfg.engine.num_threads)
    models.TRUST_REMOTE_CODE = bool(cfg.trust_remote_code)
    seed_everything(cfg.seed)


def phase_loop(cfg, name: str, hp, ds, tokenizer, module, *, run_dir: Path, logger, budget, unit: str = "examples",
               index: int = 0, resume_from: Optional[dict] = None):
    """One phase's loop over `ds` with the settings `hp` (a train.<block>): its batches, its step
    count, the engine that trains `module` (labelled `name` in DeepSpeed's checkpoints), resumed
    from `resume_from` when given."""
    batcher = Batcher(ds, tokenizer, hp.batch_size, cfg.seed, group_by_length=hp.group_by_length)
    total = total_steps(hp, batcher.batches_per_epoch)
    engine = build_engine(cfg.engine, hp, module, total, run_dir=run_dir, label=name, keep=cfg.keep_checkpoints)
    return PhaseLoop(name, engine=engine, batcher=batcher, hp=hp, total=total, run_dir=run_dir, logger=logger,
                     budget=budget, progress=cfg.progress, unit=unit, index=index, resume_from=resume_from,
                     keep_checkpoints=cfg.keep_checkpoints)


def augment_sources(cfg) -> dict:
    """What `stage=augment` draws candidates from: {model, tokenizer, vectors, describe}.

    source=mlm with a masked LM: single-piece words from it, the others from `fallback`;
    without one (augment.mlm null), every word from `fallback`, and a note saying so.
    source=glove / embedding: every word from that table.
    """
    from tinykd import augment

    a = cfg.augment  # its values were checked at start-up (config.check)
    out = {"model": None, "tokenizer": None, "vectors": None, "note": None}
    table = a.source if a.source != "mlm" else a.fallback
    if a.source == "mlm":
        if a.mlm is None:
            out["note"] = (f"augment: no masked LM configured (augment.mlm=null): every word takes "
                           f"{a.fallback} candidates. Set augment.mlm=<masked LM dir or hub id> for TinyBERT's MLM "
                           f"candidates.")
        else:
            source = teacher_source(cfg) if a.mlm == "teacher" else models.resolve_source(a.mlm, None, "masked LM", "augment.mlm")
            out["tokenizer"] = models.load_tokenizer(source, "augment.mlm")
            out["model"] = models.load_masked_lm(source, "augment.mlm")
            out["mlm_source"] = source
    if table == "glove":
        out["vectors"] = augment.load_word_vectors(a.vectors, a.max_words)
    else:
        source = teacher_source(cfg)
        tok = models.load_tokenizer(source)
        encoder = models.load_encoder(source)
        out["vectors"] = augment.embedding_word_vectors(encoder.get_input_embeddings().weight, tok.get_vocab(),
                                                        tok.all_special_tokens)
    return out


def trained_model(model: str, task_type: str, task_name: str, num_labels: Optional[int] = None):
    """The model directory `model=` names (config.check has made sure one is), checked to hold a trained head of the task's type (and, when
    given, `num_labels` outputs): (its source, its config). Used by stage=eval, export and predict."""
    source = models.resolve_source(model, None, "model", "model")
    config = models.model_config(source)
    outputs = 2 if task_type == QA else config.num_labels
    if not teachers.is_finetuned_classifier(config, outputs, task_type):
        raise TinyKDError(
            f"Model {model} has no trained {task_type.replace('_', ' ')} head (its architectures: "
            f"{getattr(config, 'architectures', None)}): task {task_name} would be scored with a random head.",
            f"use a model trained for this task (an AutoModelFor{teachers.HEAD_SUFFIXES[task_type][3:]} "
            "directory), or choose the task it was trained for (task=<name>).")
    if num_labels is not None and outputs != num_labels:
        raise TinyKDError(f"Model {model} has {outputs} output labels; task {task_name} has {num_labels}.",
                          "use a model trained for this task (task=<name>).")
    return source, config
