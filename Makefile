# MPRD suite. `make help` lists the targets. Every target creates .venv and installs on first use.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## List targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install pinned requirements + the package (idempotent)

test: $(STAMP) ## Run the test suite (fast; `make test-all` includes slow tests)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## Lint with ruff (config: [tool.ruff] in pyproject.toml)
	$(BIN)/ruff check src tests benchmarks

test-all: $(STAMP) ## Run every test, slow ones included
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

synthetic: $(STAMP) ## Generate the default synthetic dataset (data/synthetic-small-seed0)
	$(BIN)/python -m mprd.data.synthetic --root data --preset small --seed 0

smoke: $(STAMP) ## One short run: knn on the tiny synthetic set
	$(BIN)/python -m mprd.train method=knn dataset.synthetic.preset=tiny max_epochs=2 eval_every=1 logger.wandb.enabled=false

train: $(STAMP) ## Train one method: make train ARGS="method=ss"
	$(BIN)/python -m mprd.train $(ARGS)

# After training (README "After training"): CKPT = a run's checkpoints/last.ckpt or an exported .pth.
#   DATASET / DATA_ROOT / PRESET as below; EXTRA="rerank=true test.flip=true ..." adds any override.
AFTER = ckpt=$(CKPT) dataset=$(DATASET) $(if $(DATA_ROOT),dataset.root=$(DATA_ROOT)) preset=$(PRESET) $(EXTRA)
NEED_CKPT = @test -n "$(CKPT)" || { echo "CKPT=path/to/last.ckpt (or an exported .pth) is required"; exit 2; }
NUM_QUERIES ?= 20

eval: $(STAMP) ## Evaluate a checkpoint: make eval CKPT=.../last.ckpt [DATASET=.. DATA_ROOT=..] [EXTRA="rerank=true"]
	$(NEED_CKPT)
	$(BIN)/python -m mprd.eval $(AFTER)

visualize: $(STAMP) ## Ranked-list PNGs of a checkpoint: make visualize CKPT=... [NUM_QUERIES=20] [DATASET=..]
	$(NEED_CKPT)
	$(BIN)/python -m mprd.visualize num_queries=$(NUM_QUERIES) $(AFTER)

.PHONY: eval visualize

# ---------------------------------------------------------------------------------------------------
# Reproduction targets: a Hydra multirun over the artefact's rows, then its report in experiments/results/.
#   DATASET=synthetic (default; CPU preset) | market1501 | dukemtmc | msmt17 | cuhk03np   DATA_ROOT=/path
#   SEEDS="0 1 2" (mean +- std per cell)   LAUNCHER=joblib|submitit_slurm   FORCE=1 (rerun finished rows)
#   PRESET=cpu|cpu_real|paper (default: cpu on synthetic, paper otherwise)   EXTRA="key=value ..."
#   WANDB=1: the report is also logged to wandb (table + plot, job_type "report", in the artefact's group)
# Finished rows (metrics.json present) are skipped; a killed row resumes from its last.ckpt.
DATASET ?= synthetic
SEEDS ?= 0
PRESET ?= $(if $(filter synthetic synthetic_video,$(DATASET)),cpu,paper)
RESULTS := experiments/results
comma := ,
empty :=
space := $(empty) $(empty)
SEED_LIST := $(subst $(space),$(comma),$(strip $(SEEDS)))
# A preset other than the standard ones (cpu, cpu_real, paper) gets its own runs folder and report directory,
# so `PRESET=cpu_long` neither skips the cpu rows (skip_if_done) nor mixes with them in a report:
# runs/<artefact>-<dataset>-<preset>/ and experiments/results/<preset>/<artefact>-<dataset>.md. Reports read
# only the runs of PRESET (--preset).
STANDARD_PRESETS := cpu cpu_real paper
PRESET_TAG = $(if $(filter $(STANDARD_PRESETS),$(PRESET)),,-$(PRESET))
RUNS = $(RESULTS)/runs/$(1)-$(DATASET)$(PRESET_TAG)
OUT = $(RESULTS)$(if $(PRESET_TAG),/$(PRESET))
# JOBS: runs in parallel on this machine (joblib launcher, one thread each). On the CPU presets two
# one-thread runs use 2 cores better than one two-thread run (docs/presets.md); LAUNCHER=... overrides it.
JOBS ?= $(if $(filter cpu cpu_real cpu_long,$(PRESET)),2,1)
PARALLEL = $(if $(LAUNCHER),,$(filter-out 1,$(JOBS)))
TRAIN = $(if $(PARALLEL),OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 )$(BIN)/python -m mprd.train
COMMON = dataset=$(DATASET) $(if $(DATA_ROOT),dataset.root=$(DATA_ROOT)) preset=$(PRESET) \
	skip_if_done=$(if $(FORCE),false,true) auto_resume=$(if $(FORCE),false,true) \
	$(if $(LAUNCHER),launcher=$(LAUNCHER),$(if $(PARALLEL),launcher=joblib hydra.launcher.n_jobs=$(JOBS))) logger.wandb.group=$(1)-$(DATASET) $(EXTRA)
# Rows and grids come from the artefact registry (src/mprd/report/artefacts.py, standard library only); each
# *_ROWS / *_VALUES below is a default: override it on the command line (make reproduce-table1 TABLE1_ROWS=mprd,single)
ARTEFACTS_CLI = PYTHONPATH=src $(PY) -m mprd.report.artefacts
registry = $(or $(shell $(ARTEFACTS_CLI) $(1)),$(error the artefact registry has no answer to '$(1)'))
TABLE1_ROWS ?= $(call registry,rows table1)
TABLE2_ROWS ?= $(call registry,rows table2)
MU_VALUES ?= $(call registry,values fig4 method.mu)
SWEEP_K_VALUES ?= $(call registry,values sweep-k method.neighbors.min_k)
SWEEP_K_THRESHOLDS ?= $(call registry,values sweep-k method.neighbors.threshold)
SWEEP_DELTA_VALUES ?= $(call registry,values sweep-delta method.loss.delta)
SWEEP_META_IDS ?= $(call registry,values sweep-meta-ids method.meta.num_ids)
CEILING_K ?= $(call registry,values sweep-ceiling method.generator.k)
KMAX_VALUES ?= $(call registry,values sweep-kmax recipe.k_max)
KMAX_MU_VALUES ?= $(call registry,values sweep-kmax method.mu)

# The run ledger (src/mprd/report/ledger.py): after each report, the metrics.json of its runs are copied into
# experiments/results/ledger/ (tracked by git); `make restore-runs` copies them back into runs/ on a fresh clone,
# so a later make run skips the finished rows and its report still has every row. $(1): runs folders
LEDGER_ARGS = --runs $(RESULTS)/runs --ledger $(RESULTS)/ledger
archive = $(BIN)/python -m mprd.report.ledger archive $(LEDGER_ARGS) $(1)

# $(1) artefact, $(2) experiment list, $(3) run sub-folder pattern, $(4) extra overrides, $(5) more runs folders
# for the report only
define multirun
	$(TRAIN) --multirun seed=$(SEED_LIST) experiment=$(2) $(call COMMON,$(1)) artefact=$(1) \
		hydra.sweep.dir=$(call RUNS,$(1)) 'hydra.sweep.subdir=$(3)' $(4)
	$(BIN)/python -m mprd.report $(1) --runs $(call RUNS,$(1)) $(5) --dataset $(DATASET) --preset $(PRESET) --out $(OUT) $(if $(WANDB),--wandb)
	$(call archive,$(call RUNS,$(1)))
endef

reproduce-table1: $(STAMP) ## Table 1: the 8 pseudo-label rows (Super ... Single) + report
	$(call multirun,table1,$(addprefix table1/,$(subst $(comma),$(comma)table1/,$(TABLE1_ROWS))),$${row}-seed$${seed})

reproduce-table2: $(STAMP) ## Table 2: MLCR*, MLCR(+5id)*, MPRD(0id), MPRD + report
	$(call multirun,table2,$(addprefix table2/,$(subst $(comma),$(comma)table2/,$(TABLE2_ROWS))),$${row}-seed$${seed})

reproduce-fig4: $(STAMP) ## Figure 4: MPRD with mu in 0.1..0.9 (Rank-1 and mAP vs mu) + plot
	$(call multirun,fig4,fig4/mprd,mu$${method.mu}-seed$${seed},method.mu=$(MU_VALUES))

sweep-mu: $(STAMP) ## Sweep the Eq. 7 threshold mu (MU_VALUES=...)
	$(call multirun,sweep-mu,sweep,mu$${method.mu}-seed$${seed},method.mu=$(MU_VALUES) 'sweep={mu:$${method.mu}}')

sweep-k: $(STAMP) ## Sweep min k (4, 8, 16) and the similarity rule (0.5, 0.6, 0.7) of k_i
	$(call multirun,sweep-k,sweep,k$${method.neighbors.min_k}-t$${method.neighbors.threshold}-seed$${seed},method.neighbors.min_k=$(SWEEP_K_VALUES) method.neighbors.threshold=$(SWEEP_K_THRESHOLDS) 'sweep={min_k:$${method.neighbors.min_k}$(comma)threshold:$${method.neighbors.threshold}}')

sweep-delta: $(STAMP) ## Sweep the BD loss weight delta (1, 3, 5, 7)
	$(call multirun,sweep-delta,sweep,delta$${method.loss.delta}-seed$${seed},method.loss.delta=$(SWEEP_DELTA_VALUES) 'sweep={delta:$${method.loss.delta}}',$(call RUNS,table1))

sweep-meta-ids: $(STAMP) ## Sweep the number of meta identities (0, 1, 3, 5, 10, 20)
	$(call multirun,sweep-meta-ids,sweep,ids$${method.meta.num_ids}-seed$${seed},method.meta.num_ids=$(SWEEP_META_IDS) 'sweep={meta_ids:$${method.meta.num_ids}}',$(call RUNS,table1))

sweep-ceiling: $(STAMP) ## Our ceiling row super_knn (identity labels within the memory's k-NN) for k = 8, 16, 32
	$(call multirun,sweep-ceiling,table1/super_knn,k$${method.generator.k}-seed$${seed},method.generator.k=$(CEILING_K) 'sweep={k:$${method.generator.k}}',$(call RUNS,table1))

sweep-kmax: $(STAMP) ## MPRD with a wider candidate list: k_max (16, 32) x mu (0.5, 0.7, 0.9); Table 1's MPRD is k_max 8, mu 0.5
	$(call multirun,sweep-kmax,sweep,kmax$${recipe.k_max}-mu$${method.mu}-seed$${seed},recipe.k_max=$(KMAX_VALUES) method.mu=$(KMAX_MU_VALUES) 'sweep={k_max:$${recipe.k_max}$(comma)mu:$${method.mu}}',$(call RUNS,table1))

archive-runs: $(STAMP) ## Copy every run's metrics.json from runs/ into the tracked ledger (experiments/results/ledger/)
	$(call archive,)

restore-runs: $(STAMP) ## Copy the ledger's metrics.json back into runs/ (never over a different run): extend a report
	$(BIN)/python -m mprd.report.ledger restore $(LEDGER_ARGS)

ARTEFACT ?= table1
report: $(STAMP) ## Rebuild a report from metrics.json files alone: make report ARTEFACT=table1 [DATASET=..] [WANDB=1]
	$(BIN)/python -m mprd.report $(ARTEFACT) --runs $(call RUNS,$(ARTEFACT)) --dataset $(DATASET) --preset $(PRESET) --out $(OUT) $(if $(WANDB),--wandb)

# one report for the seed baselines: whichever of these folders exist
BASELINE_RUNS = $(call RUNS,sslr) $(call RUNS,uga)
SSLR_ROWS ?= $(call registry,rows baselines sslr)
# experiments under conf/experiment/uga/ (= rows uga_intra, uga_noself, uga: the issue's three); the others:
# intra_r, intra_bn (Table 2), lambda055 ... lambda075 (Table 3), noself_lambda070 (Table 5 as printed), raw
UGA_ROWS ?= $(call registry,rows baselines uga)

reproduce-sslr: $(STAMP) ## SSLR ablation rows (baseline, w/o part and CCE, w/o part, full) + report
	$(TRAIN) --multirun seed=$(SEED_LIST) experiment=$(addprefix sslr/,$(subst $(comma),$(comma)sslr/,$(SSLR_ROWS))) \
		$(call COMMON,sslr) hydra.sweep.dir=$(call RUNS,sslr) 'hydra.sweep.subdir=$${row}-seed$${seed}'
	$(BIN)/python -m mprd.report baselines --runs $(BASELINE_RUNS) --dataset $(DATASET) --preset $(PRESET) --out $(OUT)
	$(call archive,$(BASELINE_RUNS))

# SSLR Fig. 4(b)-(f): one multirun of experiment sslr/sweep per parameter, then its sweep report (md/csv/png).
# $(1) artefact suffix, $(2) key of the `sweep` field, $(3) config key, $(4) comma-separated values
SSLR_LAM_VALUES ?= $(call registry,values sweep-sslr-lam method.soft.lam)
SSLR_K_VALUES ?= $(call registry,values sweep-sslr-k method.soft.k)
SSLR_LAMBDA_C_VALUES ?= $(call registry,values sweep-sslr-lambda-c method.similarity.lambda_c)
SSLR_LAMBDA_P_VALUES ?= $(call registry,values sweep-sslr-lambda-p method.similarity.lambda_p)
SSLR_PARTS_VALUES ?= $(call registry,values sweep-sslr-parts method.similarity.parts)
define sslr_sweep
	$(call multirun,sweep-sslr-$(1),sslr/sweep,$(2)$${$(3)}-seed$${seed},$(3)=$(4) 'sweep={$(2):$${$(3)}}')
endef

sweep-sslr-lam: $(STAMP) ## SSLR Fig. 4(b): lambda of Eq. 3 (SSLR_LAM_VALUES=0.1,...,0.9)
	$(call sslr_sweep,lam,lam,method.soft.lam,$(SSLR_LAM_VALUES))

sweep-sslr-k: $(STAMP) ## SSLR Fig. 4(c): reliable-set size k (SSLR_K_VALUES=1,...,10)
	$(call sslr_sweep,k,k,method.soft.k,$(SSLR_K_VALUES))

sweep-sslr-lambda-c: $(STAMP) ## SSLR Fig. 4(d): CCE strength lambda_c of Eq. 6 (SSLR_LAMBDA_C_VALUES=0,...,0.05)
	$(call sslr_sweep,lambda-c,lambda_c,method.similarity.lambda_c,$(SSLR_LAMBDA_C_VALUES))

sweep-sslr-lambda-p: $(STAMP) ## SSLR Fig. 4(e): part weight lambda_p of Eq. 7 (SSLR_LAMBDA_P_VALUES=0,...,1)
	$(call sslr_sweep,lambda-p,lambda_p,method.similarity.lambda_p,$(SSLR_LAMBDA_P_VALUES))

sweep-sslr-parts: $(STAMP) ## SSLR Fig. 4(f): number of parts p of Eq. 5 (SSLR_PARTS_VALUES=1,...,10)
	$(call sslr_sweep,parts,parts,method.similarity.parts,$(SSLR_PARTS_VALUES))

.PHONY: sweep-sslr-lam sweep-sslr-k sweep-sslr-lambda-c sweep-sslr-lambda-p sweep-sslr-parts

# UGA_ROWS takes experiment names (intra) or the rows they write (uga_intra)
UGA_EXPERIMENTS = $(subst $(space),$(comma),$(patsubst uga_%,%,$(subst $(comma), ,$(UGA_ROWS))))

reproduce-uga: $(STAMP) ## UGA rows uga_intra, uga_noself, uga (UGA_ROWS=intra,noself,uga; intra-camera labels; its Tables 4-5) + report
	$(TRAIN) --multirun seed=$(SEED_LIST) experiment=$(addprefix uga/,$(subst $(comma),$(comma)uga/,$(UGA_EXPERIMENTS))) \
		$(call COMMON,uga) hydra.sweep.dir=$(call RUNS,uga) 'hydra.sweep.subdir=$${row}-seed$${seed}'
	$(BIN)/python -m mprd.report baselines --runs $(BASELINE_RUNS) --dataset $(DATASET) --preset $(PRESET) --out $(OUT)
	$(call archive,$(BASELINE_RUNS))

# UGA Table 3 (full UGA at each CVG threshold lambda) and Table 6 (stage 1 on noisy tracklets: ID duplication,
# then mislabeling; both curves start at the clean rate 0), each a sweep report (md/csv/png)
UGA_LAMBDA_VALUES ?= $(call registry,values sweep-uga-lambda method.cvg.threshold)
UGA_DUPLICATION_RATES ?= $(call registry,values sweep-uga-noise method.noise.duplication)
UGA_MISLABELING_RATES ?= $(call registry,values sweep-uga-noise method.noise.mislabeling)
# $(1) noise option of method.noise (duplication | mislabeling), $(2) its rates
define uga_noise_multirun
	$(TRAIN) --multirun seed=$(SEED_LIST) experiment=uga/intra $(call COMMON,sweep-uga-noise) artefact=sweep-uga-noise \
		hydra.sweep.dir=$(call RUNS,sweep-uga-noise) 'hydra.sweep.subdir=$(1)$${method.noise.$(1)}-seed$${seed}' \
		method.noise.$(1)=$(2) 'sweep={rate:$${method.noise.$(1)},kind:$(1)}'
endef

sweep-uga-lambda: $(STAMP) ## UGA Table 3: full UGA over lambda (UGA_LAMBDA_VALUES=0.55,...,0.75) + report and plot
	$(call multirun,sweep-uga-lambda,uga/uga,lambda$${method.cvg.threshold}-seed$${seed},method.cvg.threshold=$(UGA_LAMBDA_VALUES) 'sweep={lambda:$${method.cvg.threshold}}')

sweep-uga-noise: $(STAMP) ## UGA Table 6: stage 1 on noisy tracklets (UGA_DUPLICATION_RATES, UGA_MISLABELING_RATES) + report
	$(call uga_noise_multirun,duplication,$(UGA_DUPLICATION_RATES))
	$(call uga_noise_multirun,mislabeling,$(UGA_MISLABELING_RATES))
	$(BIN)/python -m mprd.report sweep-uga-noise --runs $(call RUNS,sweep-uga-noise) --dataset $(DATASET) --preset $(PRESET) --out $(OUT) $(if $(WANDB),--wandb)
	$(call archive,$(call RUNS,sweep-uga-noise))

UGA_CURVE_RUN ?= $(call RUNS,uga)/uga_intra-seed$(firstword $(SEEDS))
uga-cvg-curve: $(STAMP) ## UGA Fig. 4: CVG edge precision/recall vs lambda, +- mutual NN, of one run (UGA_CURVE_RUN=folder)
	$(BIN)/python benchmarks/uga_cvg_curve.py --run $(UGA_CURVE_RUN) --out $(RESULTS)

.PHONY: sweep-uga-lambda sweep-uga-noise uga-cvg-curve

# MPRD, MLCR and SSLR under the same data and preset; UGA (intra-camera labels) as an extra row the paper lacks.
# SSLR's schedule (stage 0 + S iterations) must fill max_epochs: the CPU presets set a short one
# (`sslr_schedule`); on the GPU presets its row runs SSLR's own 25 + 20 x 2 = 65 epochs (SSLR_TABLE3).
TABLE3_EXPERIMENTS ?= $(call registry,experiments table3)
SSLR_TABLE3 ?= $(if $(filter cpu cpu_real cpu_long,$(PRESET)),,max_epochs=65)

reproduce-table3: $(STAMP) ## Table 3: MPRD, MLCR, SSLR (+ UGA, extra) with Rank-1/5/10, mAP, what each uses + report
	$(TRAIN) --multirun seed=$(SEED_LIST) experiment=$(subst $(comma)sslr/table3,,$(TABLE3_EXPERIMENTS)) \
		$(call COMMON,table3) artefact=table3 hydra.sweep.dir=$(call RUNS,table3) 'hydra.sweep.subdir=$${row}-seed$${seed}'
	$(call multirun,table3,sslr/table3,$${row}-seed$${seed},$(SSLR_TABLE3))

# Video rows (SSLR Table 2, UGA Tables 4 and 8, Super as a reference): DATASET is the synthetic tracklets here
# (VIDEO_DATASET=mars | dukemtmcvideoreid | prid2011 | ilidsvid with DATA_ROOT=...); PRID2011 / iLIDS-VID run
# every identity split of VIDEO_SPLITS, averaged like seeds. On the GPU presets SSLR's video schedule is
# 30 + 20 x 5 = 130 epochs (the video experiments set stage 0 = 30 and 5 epochs per iteration) and UGA's 80 + 80.
VIDEO_DATASET ?= synthetic_video
VIDEO_SPLITS ?= 0,1,2,3,4,5,6,7,8,9
VIDEO_ROWS ?= $(call registry,rows video)
reproduce-video: DATASET = $(VIDEO_DATASET)
VIDEO_WORDS = $(subst $(comma),$(space),$(VIDEO_ROWS))
VIDEO_SSLR = $(filter-out sslr_baseline,$(filter sslr%,$(VIDEO_WORDS)))
VIDEO_UGA = $(filter uga%,$(VIDEO_WORDS))
VIDEO_GPU = $(if $(filter cpu cpu_real cpu_long,$(PRESET)),,1)
VIDEO_SPLIT = $(if $(filter prid2011 ilidsvid,$(DATASET)),dataset.options.split_id=$(VIDEO_SPLITS))
# $(1) rows (space-separated; nothing runs when empty), $(2) extra overrides
define video_multirun
	$(if $(strip $(1)),$(TRAIN) --multirun seed=$(SEED_LIST) experiment=$(subst $(space),$(comma),$(addprefix video/,$(strip $(1)))) \
		$(call COMMON,video) artefact=video hydra.sweep.dir=$(call RUNS,video) \
		'hydra.sweep.subdir=$${row}$(if $(VIDEO_SPLIT),-split$${dataset.options.split_id})-seed$${seed}' $(VIDEO_SPLIT) $(2))
endef

reproduce-video: $(STAMP) ## Video rows: SSLR, UGA intra and full, Super on tracklets (synthetic_video; VIDEO_DATASET=mars ..) + report
	$(call video_multirun,$(VIDEO_SSLR),$(if $(VIDEO_GPU),max_epochs=130))
	$(call video_multirun,$(VIDEO_UGA),$(if $(VIDEO_GPU),max_epochs=160))
	$(call video_multirun,$(filter-out $(VIDEO_SSLR) $(VIDEO_UGA),$(VIDEO_WORDS)))
	$(BIN)/python -m mprd.report video --runs $(call RUNS,video) --dataset $(DATASET) --preset $(PRESET) --out $(OUT) $(if $(WANDB),--wandb)
	$(call archive,$(call RUNS,video))

.PHONY: help install lint test test-all synthetic smoke train report archive-runs restore-runs reproduce-table1 reproduce-sslr reproduce-uga reproduce-table3 reproduce-table2 reproduce-fig4 reproduce-video \
	sweep-mu sweep-k sweep-delta sweep-meta-ids sweep-ceiling sweep-kmax
