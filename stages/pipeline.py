"""Stage `pipeline`: teacher fine-tuning → general distillation → (augmentation →) task
distillation, one command.

Each step is the ordinary stage with the same config, writing its own run directory
(`runs.teacher`, `runs.general`, `runs.augment`, `runs.task`); each reads the one before
through files. With `stage.augment=true` the augment stage runs before task distillation,
which then trains on its output (the teacher still fine-tunes on the original data).
With resume=true a finished step (its results.json exists) is skipped and an interrupted
one continues from its checkpoint. When `teacher.path` is already a fine-tuned classifier for the task,
the teacher step is skipped and task distillation uses it as it is. General distillation runs only for a
student that starts from it (`student.init=general`): `student.init=pruned` starts from the fine-tuned
teacher pruned to the student's shape. A BiLSTM student (`student=bilstm`) has no general stage: its
recipe starts from the fine-tuned teacher.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf, open_dict

from tinykd import build, data
from tinykd.run import CHECKPOINT, check_start, holding, is_finished, read_results, write_results
from tinykd.stages import augment, general, task, teacher

STEPS = (("teacher", teacher), ("general", general), ("augment", augment), ("task", task))


def step_config(cfg, name: str):
    """A copy of `cfg` for one step: resume only what was started and not finished."""
    run_dir = Path(cfg.runs[name])
    finished = is_finished(run_dir)
    started = (run_dir / CHECKPOINT).is_file()
    sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(sub):
        sub.stage.name = name
        sub.resume = bool(cfg.resume and started and not finished)
    return sub, finished


def run(cfg) -> dict:
    results = {}
    # teacher.path already a fine-tuned classifier for the task: task distillation uses it as it is
    spec = build.task_spec(cfg)
    if cfg.stage.augment and spec.is_token:  # before any step runs: a tag set without O cannot be augmented
        augment.outside_tag(spec)
    if cfg.task.transfer:  # and transfer data that cannot be read is named now, not after the teacher trained
        data.check_transfer(spec, cfg.task, build.data_cache(cfg))
    given = None if cfg.stage.teacher_dir else build.given_finetuned_teacher(cfg, spec)
    for name, module in STEPS:
        if (name == "augment" and not cfg.stage.augment) or (name == "general" and cfg.student.arch == "bilstm"):
            continue
        if name == "general" and cfg.student.init != "general":  # task distillation starts from elsewhere
            print(f"[tinykd] pipeline: student.init={cfg.student.init}: no general distillation")
            continue
        if name == "teacher" and given is not None:
            print(f"[tinykd] pipeline: teacher.path={given} is a fine-tuned classifier for the task: no stage=teacher")
            continue
        sub, finished = step_config(cfg, name)
        if name == "task" and cfg.stage.augment:  # task distillation (only) trains on the augmented set
            with open_dict(sub):
                sub.task.augmented = str(Path(cfg.runs.augment) / augment.DATA)
        if cfg.resume and finished and name != "augment":  # augment checks its own settings and shards
            results[name] = read_results(Path(cfg.runs[name]))
            print(f"[tinykd] pipeline: {name} already finished in {cfg.runs[name]}; skipped")
            continue
        with holding(Path(cfg.runs[name])):
            check_start(sub, Path(cfg.runs[name]), name)
            print(f"[tinykd] pipeline: {name}")
            results[name] = module.run(sub)
        if results[name].get("interrupted"):
            return results[name]

    out_dir = Path(cfg.runs.pipeline)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "stage": "pipeline",
        "task": cfg.task.name,
        "teacher_dev": results["task"]["teacher_dev"] or results["teacher"]["dev"],
        "student_dev": results["task"]["dev"],
        "main_metric": results["task"]["main_metric"],
        "dev": results["task"]["dev"],
        "teacher_export": results["teacher"]["export"] if "teacher" in results else given,
        "general_export": results["general"]["export"] if "general" in results else None,
        "augmented": results["augment"]["data"] if "augment" in results else None,
        "student_export": results["task"]["export"],
        "run_dir": str(out_dir),
    }
    write_results(out_dir, summary)
    m = summary["main_metric"]
    print(f"[tinykd] pipeline done: teacher dev {m} = {summary['teacher_dev'][m]:.4f}, "
          f"student dev {m} = {summary['student_dev'][m]:.4f}")
    print(f"[tinykd] student exported to {summary['student_export']}")
    return summary
