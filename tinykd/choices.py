"""Every option with a fixed set of values, defined once.

The schema (`tinykd/config.py`) attaches these to its fields and `config.check` refuses any
other value at start-up; library code that branches on an option imports its set from here.
The standard library only: importing this costs nothing.
"""

# --- distillation (distill.*)
DISTILL_METHODS = ("tinybert", "distilbert")  # general stage: layer losses | DistilBERT's triple loss
LAYER_MAPS = ("uniform", "last", "list", "kept")  # kept: the layers a pruned student was cut from
ATTENTION_TARGETS = ("scores", "probs")  # pre-softmax (TinyBERT) | post-softmax
ATTENTION_HEADS = ("match", "mean")  # head h to head h | heads averaged first
PRED_LOSSES = ("soft_ce", "kl", "mse")
CACHE_PRECISIONS = ("fp16", "fp32")  # how cached teacher logits are stored
TEACHER_CACHES = ("auto", *CACHE_PRECISIONS, "none")
TRANSFER_TARGETS = ("hard", "soft")  # student=bilstm: the teacher's argmax | its logits
RELATIONS = ("qq", "kk", "vv")  # MiniLMv2 self-attention relations: query-query, key-key, value-value

# --- students (student.*)
STUDENT_ARCHS = ("bert", "distilbert", "bilstm")
GENERAL_INITS = ("random", "teacher_layers", "pruned")
EMBEDDINGS = ("teacher", "glove", "random")  # student=bilstm: where its input embeddings come from

# --- stages (stage.*)
TASK_PHASES = ("intermediate", "prediction", "finetune")  # finetune: the no-distillation baseline, alone
BILSTM_PHASES = ("representation", "logits", "finetune")

# --- data (task.*, augment.*)
TASK_SOURCES = ("tsv", "hub")  # a GLUE task: its TSV files in task.data_dir | the hub's nyu-mll/glue
# task.format: how task.train/dev/test are read (auto: by extension; a directory: datasets.save_to_disk's)
# conll: token and tag columns, a blank line between sentences; conllu: CoNLL-U (FORM, UPOS by default);
# squad: SQuAD's nested JSON ({"data": [{"paragraphs": [{"context", "qas"}]}]})
DATA_FORMATS = ("auto", "csv", "tsv", "json", "jsonl", "parquet", "arrow", "conll", "conllu", "squad")
# task.type: what the model predicts. Sentence (pair) classification/regression, a tag per word, an answer span
SEQUENCE, TOKEN, QA = "sequence_classification", "token_classification", "question_answering"
TASK_TYPES = (SEQUENCE, TOKEN, QA)
TAG_SCHEMES = ("iob2", "none")  # token tasks: B-X/I-X/O entity tags (entity metrics) | any tag set (POS)
OVERFLOWS = ("window", "truncate")  # token tasks, a training sentence longer than max_seq_len
# token and QA tasks' metrics (tinykd/data/tokens.py: seqeval; tinykd/squad.py: the official SQuAD script's rules)
TOKEN_METRICS = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")
QA_METRICS = ("squad_f1", "squad_em")
# task.problem_type: Hugging Face's config.problem_type values
SINGLE_LABEL, MULTI_LABEL, REGRESSION = "single_label_classification", "multi_label_classification", "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)
# task.metrics: what each problem type can be scored with (scikit-learn / scipy: tinykd/metrics.py), and the
# default list (the first selects checkpoints). f1 is the positive class's (class id 1) of a two-class task.
METRICS = {
    SINGLE_LABEL: ("accuracy", "f1", "macro_f1", "matthews"),
    MULTI_LABEL: ("micro_f1", "macro_f1", "exact_match"),
    REGRESSION: ("pearson", "spearman"),
}
DEFAULT_METRICS = {
    SINGLE_LABEL: ("accuracy", "macro_f1"),
    MULTI_LABEL: ("micro_f1", "macro_f1", "exact_match"),
    REGRESSION: ("pearson", "spearman"),
}
AUGMENT_SOURCES = ("mlm", "glove", "embedding")
AUGMENT_FALLBACKS = ("glove", "embedding")
MLM_MODES = ("exact", "masked_once", "single_pass")

# --- engine, logger
ENGINES = ("torch", "deepspeed")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
ZERO_STAGES = (0, 1, 2, 3)
LOGGERS = ("wandb", "none")
LOGGER_MODES = ("offline", "online", "disabled")

# stage=predict: which form of the exported model predicts (stage=export writes the ONNX ones)
BACKENDS = ("pytorch", "onnx", "int8")
EXPORT_ATTENTION = ("eager", "sdpa")  # stage=export: attention as matrix products | as the exporter lowers SDPA

# task.transfer for an extractive QA task: each training question with another paragraph of its article
OTHER_PARAGRAPHS = "other_paragraphs"
