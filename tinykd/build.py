"""Small functions that turn one part of the config into plain objects for the stages: a model
source, a student, a dataset, a list of layer matches, the augmentation's candidate sources.

The models, data, losses and layer maps they call take plain values. Besides the stages and
these, `cfg` is read only by the plumbing around them: `config` (the schemas and the start-up
check, which has already refused unknown values and impossible combinations by the time these
run), `cli` (dispatch), `engine.build_engine` and `loop.PhaseLoop` (the engine node and a phase's
train.<block>), `run` (saving and comparing configs, the metrics logger) and `sweep` (Hydra's sweep
callback).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Optional, Sequence

import torch

from tinykd import attention, data, models, teachers
from tinykd.choices import QA, RELATIONS, SEQUENCE
from tinykd.config import sample_size
from tinykd.data import Batcher
from tinykd.distiller import (Distiller, RelationMatch, check_attention_capture, check_compatible, qkv_projections,
                              use_attention_target)
from tinykd.engine import build_engine
from tinykd.errors import TinyKDError
from tinykd.layermap import FEATURES, LayerMatch, format_table, resolve_matches
from tinykd.loop import PhaseLoop
from tinykd.run import check_upstream, seed_everything
from tinykd.tasks import TaskSpec, described_in_config, get_task


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


def task_spec(cfg) -> TaskSpec:
    """The task: a GLUE task's registry entry, or (your own data) one built from `task.*` and the training split."""
    if described_in_config(cfg.task):
        from tinykd import userdata

        return userdata.build_spec(cfg.task, str(Path(cfg.paths.cache) / "datasets" / "raw"))
    return get_task(cfg.task.name)


def task_split(cfg, spec: TaskSpec, tokenizer, split: str, *, limit: Optional[int] | str = "config"):
    """A split (train, dev or test) of the task, tokenised. `limit`: the first N rows; by default
    task.train_limit / task.dev_limit (none for test)."""
    if limit == "config":
        # an augmented set is used whole: stage=augment already applied train_limit to its sources
        limit = {"train": None if cfg.task.augmented else cfg.task.train_limit, "dev": cfg.task.dev_limit}.get(split)
    return data.load_task_split(
        spec, split, tokenizer,
        source=cfg.task.source, data_dir=cfg.task.data_dir, max_len=cfg.task.max_seq_len, limit=limit,
        cache_dir=str(Path(cfg.paths.cache) / "datasets"),
        augmented=cfg.task.augmented if split == "train" else None,
        task=cfg.task if spec.glue is None else None,
    )


def test_score(cfg, spec: TaskSpec, model, tokenizer, batch_size: int, device) -> Optional[dict]:
    """The model's scores on `task.test` (your own data), when it is set and labelled; else None. Only
    models already selected on dev are scored here: nothing is chosen by it."""
    if spec.glue is not None or not cfg.task.test:
        return None
    from tinykd import userdata
    from tinykd.evaluate import evaluate

    if not userdata.has_labels(cfg.task, "test", str(Path(cfg.paths.cache) / "datasets" / "raw")):
        return None
    test = task_split(cfg, spec, tokenizer, "test")
    scores = evaluate(model, test, tokenizer, spec, batch_size, device)
    print("[tinykd] test: " + ", ".join(f"{k} = {v:.4f}" for k, v in scores.items()) + f" ({len(test)} examples)")
    return scores


def corpus(cfg, tokenizer):
    return data.load_corpus(
        tokenizer, corpus_dir=cfg.paths.corpus_dir, patterns=list(cfg.corpus.files), exclude=list(cfg.corpus.exclude),
        max_lines=cfg.corpus.max_lines, max_len=cfg.corpus.max_seq_len, cache_dir=str(Path(cfg.paths.cache) / "datasets"),
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
    batcher = Batcher(ds, tokenizer, hp.batch_size, cfg.seed)
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


def side_by_side_latency(cfg, student, teacher=None) -> dict:
    """The student's and (when given) the teacher's CPU latency, timed side by side (taking turns): batch 1
    and 32 x 64 tokens, the median of `stage.latency_repeats` forwards each (tinykd/latency.py)."""
    from tinykd import latency

    timed = {"student": student, **({"teacher": teacher} if teacher is not None else {})}
    by_batch = {b: latency.measure_side_by_side(timed, b, 64, repeats=cfg.stage.latency_repeats) for b in (1, 32)}
    return {name: {f"b{b}": by_batch[b][name] for b in by_batch} for name in timed}


def student_card(cfg, spec: TaskSpec, *, run_dir: Path, export_dir: Path, student, teacher, teacher_dir: str,
                 dev: dict, teacher_dev: Optional[dict], dev_examples: int, recipe: str, timing: dict) -> Path:
    """Write the exported student's model card (tinykd/modelcard.py) with the run's facts: the task, the
    teacher, the recipe and command, the dev scores, and the size and latency (`side_by_side_latency`) of
    student and teacher."""
    from tinykd import latency, modelcard
    from tinykd.metrics import retention
    from tinykd.run import command_line
    from tinykd.system import cpu_name

    timing = {name: {b: t["median_ms"] for b, t in by_batch.items()} for name, by_batch in timing.items()}
    s, m = cfg.student, spec.main_metric
    shape = (f"{student.config.num_hidden_layers}-layer, {student.config.hidden_size}-wide {s.arch} "
             if s.arch != "bilstm" else f"{student.config.num_layers}-layer BiLSTM ")
    glue = spec.glue is not None
    labels = f", labels {', '.join(spec.label_names)}" if spec.label_names and len(spec.label_names) <= 12 else ""
    facts = {
        "name": f"tinykd-{spec.name}-{s.name}",
        "task": {"name": spec.name, "type": spec.type, "hub": modelcard.GLUE_HUB if glue else cfg.task.hub,
                 "hub_config": spec.name if glue else cfg.task.hub_config, "dev_examples": dev_examples,
                 "description": f"task {spec.name} ({spec.type.replace('_', ' ')}{labels})"},
        "metrics": list(spec.metrics), "dev": dict(dev),
        "retention": retention(dev, teacher_dev, m),
        "teacher": {"dir": str(teacher_dir), "base": modelcard.hub_id(cfg.teacher.path),
                    "dev": dict(teacher_dev) if teacher_dev else None, "params": latency.parameters(teacher)},
        "student": {"arch": s.arch, "description": f"{shape}student ({s.name})", "params": latency.parameters(student)},
        "latency": {**timing, **({f"speedup_{b}": timing["teacher"][b] / timing["student"][b] for b in ("b1", "b32")}
                                 if "teacher" in timing else {}),
                    "seq_len": 64, "repeats": cfg.stage.latency_repeats, "threads": latency.threads(),
                    "machine": cpu_name()},
        "recipe": recipe, "auto_class": modelcard.AUTO_CLASSES[spec.type],
        "command": command_line() or (f"# composed in Python: stage=task task={spec.name} teacher={cfg.teacher.name} "
                                      f"student={s.name} seed={cfg.seed} (the full config: tinykd_config.yaml)"),
    }
    return modelcard.write(export_dir, facts, run_dir / "config.yaml")


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
