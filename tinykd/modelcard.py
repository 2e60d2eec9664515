"""The model card of an exported student: `README.md` in Hugging Face's model-card format, made with
`huggingface_hub`'s `ModelCard.from_template` (YAML metadata from `ModelCardData` and `EvalResult`, then
the body rendered from `tinykd/model_card.md`).

Every fact the card shows sits once, under the metadata's `tinykd:` key (`facts`); the body is rendered
from them, so a later stage (stage=export adds the ONNX figures) loads the facts, adds its own and
renders the card again. Beside the card, `tinykd_config.yaml` is the run's whole resolved configuration.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from tinykd import latency, run
from tinykd.atomic import atomic_write_text
from tinykd.choices import QA, SEQUENCE, TOKEN
from tinykd.metrics import retention
from tinykd.run import command_line
from tinykd.system import cpu_name
from tinykd.tasks import TaskSpec

CARD = "README.md"
SHIPPED_CONFIG = "tinykd_config.yaml"
TEMPLATE = Path(__file__).with_name("model_card.md")
PIPELINE_TAGS = {SEQUENCE: "text-classification", TOKEN: "token-classification", QA: "question-answering"}
AUTO_CLASSES = {SEQUENCE: "AutoModelForSequenceClassification", TOKEN: "AutoModelForTokenClassification",
                QA: "AutoModelForQuestionAnswering"}
GLUE_HUB = "nyu-mll/glue"
_HUB_ID = re.compile(r"[\w.\-]+/[\w.\-]+")


def hub_id(path: Optional[str]) -> Optional[str]:
    """`path` when it names a hub model (owner/name) rather than a local directory, else None."""
    if not path or Path(path).expanduser().exists() or not _HUB_ID.fullmatch(path):
        return None
    return path


def card_data(facts: dict) -> ModelCardData:
    """The card's YAML metadata: library, pipeline tag, base model (the teacher's hub id), datasets,
    metrics and the dev scores as model-index results, and the facts the body is rendered from."""
    task = facts["task"]
    tag = PIPELINE_TAGS[task["type"]]
    dataset = task.get("hub") or task["name"]
    results = [EvalResult(task_type=tag, dataset_type=dataset, dataset_name=task["name"],
                          dataset_config=task.get("hub_config"), dataset_split="validation",
                          metric_type=m, metric_name=m, metric_value=facts["dev"][m]) for m in facts["metrics"]]
    return ModelCardData(
        library_name="transformers", pipeline_tag=tag, base_model=facts["teacher"].get("base"),
        datasets=[task["hub"]] if task.get("hub") else None, metrics=list(facts["metrics"]),
        language="en" if task.get("hub") == GLUE_HUB else None, model_name=facts["name"], eval_results=results,
        tags=["tinykd", "knowledge-distillation", "distilled"], tinykd=facts)


def render(facts: dict) -> ModelCard:
    data = card_data(facts)
    return ModelCard.from_template(data, template_path=str(TEMPLATE), model_name=facts["name"], facts=facts)


def write(model_dir: Path, facts: dict, config_file: Optional[Path] = None) -> Path:
    """Render the card for `facts` into `model_dir/README.md` (atomically); copy `config_file` (the run's
    resolved config.yaml) beside it as tinykd_config.yaml."""
    model_dir = Path(model_dir)
    if config_file is not None and Path(config_file).is_file():
        shutil.copyfile(config_file, model_dir / SHIPPED_CONFIG)
    path = model_dir / CARD
    atomic_write_text(path, str(render(facts)))
    return path


def load_facts(model_dir: Path) -> Optional[dict]:
    """The facts of `model_dir`'s card, or None when it has no tinykd card."""
    path = Path(model_dir) / CARD
    if not path.is_file():
        return None
    facts = ModelCard.load(path).data.to_dict().get("tinykd")
    return facts if isinstance(facts, dict) else None


def eval_scores(model_dir: Path) -> dict[str, float]:
    """The dev scores the card's metadata declares (model-index), as huggingface_hub parses them."""
    card = ModelCard.load(Path(model_dir) / CARD)
    return {r.metric_type: r.metric_value for r in card.data.eval_results or []}


def phase_length(hp) -> str:
    """How long a phase with the settings `hp` (a train.<block>) trains, as a card's recipe says it."""
    return f"{hp.max_steps} steps" if hp.max_steps else f"{hp.epochs:g} epochs"


def student_card(cfg, spec: TaskSpec, *, run_dir: Path, export_dir: Path, student, teacher, teacher_dir: str,
                 dev: dict, teacher_dev: Optional[dict], dev_examples: int, recipe: str, timing: dict) -> Path:
    """Write the exported student's model card with the run's facts: the task, the
    teacher, the recipe and command, the dev scores, and the size and latency (`latency.side_by_side`) of
    student and teacher."""
    timing = {name: {b: t["median_ms"] for b, t in by_batch.items()} for name, by_batch in timing.items()}
    s, m = cfg.student, spec.main_metric
    shape = (f"{student.config.num_hidden_layers}-layer, {student.config.hidden_size}-wide {s.arch} "
             if s.arch != "bilstm" else f"{student.config.num_layers}-layer BiLSTM ")
    glue = spec.glue is not None
    labels = f", labels {', '.join(spec.label_names)}" if spec.label_names and len(spec.label_names) <= 12 else ""
    facts = {
        "name": f"tinykd-{spec.name}-{s.name}",
        "task": {"name": spec.name, "type": spec.type, "hub": GLUE_HUB if glue else cfg.task.hub,
                 "hub_config": spec.name if glue else cfg.task.hub_config, "dev_examples": dev_examples,
                 "description": f"task {spec.name} ({spec.type.replace('_', ' ')}{labels})"},
        "metrics": list(spec.metrics), "dev": dict(dev),
        "retention": retention(dev, teacher_dev, m),
        "teacher": {"dir": str(teacher_dir), "base": hub_id(cfg.teacher.path),
                    "dev": dict(teacher_dev) if teacher_dev else None, "params": latency.parameters(teacher)},
        "student": {"arch": s.arch, "description": f"{shape}student ({s.name})", "params": latency.parameters(student)},
        "latency": {**timing, **({f"speedup_{b}": timing["teacher"][b] / timing["student"][b] for b in ("b1", "b32")}
                                 if "teacher" in timing else {}),
                    "seq_len": 64, "repeats": cfg.stage.latency_repeats, "threads": latency.threads(),
                    "machine": cpu_name()},
        "recipe": recipe, "auto_class": AUTO_CLASSES[spec.type],
        "command": command_line() or (f"# composed in Python: stage=task task={spec.name} teacher={cfg.teacher.name} "
                                      f"student={s.name} seed={cfg.seed} (the full config: {SHIPPED_CONFIG})"),
    }
    return write(export_dir, facts, run_dir / run.CONFIG)
