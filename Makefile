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

test-all: $(STAMP) ## Run every test, slow ones included
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

synthetic: $(STAMP) ## Generate the default synthetic dataset (data/synthetic-small-seed0)
	$(BIN)/python -m mprd.data.synthetic --root data --preset small --seed 0

smoke: $(STAMP) ## One short run: knn on the tiny synthetic set
	$(BIN)/python -m mprd.train method=knn dataset.synthetic.preset=tiny max_epochs=2 eval_every=1 logger.wandb.enabled=false

train: $(STAMP) ## Train one method: make train ARGS="method=ss"
	$(BIN)/python -m mprd.train $(ARGS)

# ---------------------------------------------------------------------------------------------------
# Reproduction targets: a Hydra multirun over the artefact's rows, then its report in experiments/results/.
#   DATASET=synthetic (default; CPU preset) | market1501 | dukemtmc | msmt17 | cuhk03np   DATA_ROOT=/path
#   SEEDS="0 1 2" (mean +- std per cell)   LAUNCHER=joblib|submitit_slurm   FORCE=1 (rerun finished rows)
#   PRESET=cpu|cpu_real|paper (default: cpu on synthetic, paper otherwise)   EXTRA="key=value ..."
# Finished rows (metrics.json present) are skipped; a killed row resumes from its last.ckpt.
DATASET ?= synthetic
SEEDS ?= 0
PRESET ?= $(if $(filter synthetic,$(DATASET)),cpu,paper)
RESULTS := experiments/results
comma := ,
empty :=
space := $(empty) $(empty)
SEED_LIST := $(subst $(space),$(comma),$(strip $(SEEDS)))
RUNS = $(RESULTS)/runs/$(1)-$(DATASET)
COMMON = dataset=$(DATASET) $(if $(DATA_ROOT),dataset.root=$(DATA_ROOT)) preset=$(PRESET) seed=$(SEED_LIST) \
	skip_if_done=$(if $(FORCE),false,true) auto_resume=$(if $(FORCE),false,true) \
	$(if $(LAUNCHER),launcher=$(LAUNCHER)) logger.wandb.group=$(1)-$(DATASET) $(EXTRA)
TABLE1_ROWS := super,knn,ss,mplp,mprd_wo,mprd_nocam,mprd,single
TABLE2_ROWS := mlcr,mlcr_5id,mprd_0id,mprd
MU_VALUES ?= 0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9

# $(1) artefact, $(2) experiment list, $(3) run sub-folder pattern, $(4) extra overrides
define multirun
	$(BIN)/python -m mprd.train --multirun experiment=$(2) $(call COMMON,$(1)) artefact=$(1) \
		hydra.sweep.dir=$(call RUNS,$(1)) 'hydra.sweep.subdir=$(3)' $(4)
	$(BIN)/python -m mprd.report $(1) --runs $(call RUNS,$(1)) --dataset $(DATASET) --out $(RESULTS)
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
	$(call multirun,sweep-k,sweep,k$${method.neighbors.min_k}-t$${method.neighbors.threshold}-seed$${seed},method.neighbors.min_k=4$(comma)8$(comma)16 method.neighbors.threshold=0.5$(comma)0.6$(comma)0.7 'sweep={min_k:$${method.neighbors.min_k}$(comma)threshold:$${method.neighbors.threshold}}')

sweep-delta: $(STAMP) ## Sweep the BD loss weight delta (1, 3, 5, 7)
	$(call multirun,sweep-delta,sweep,delta$${method.loss.delta}-seed$${seed},method.loss.delta=1$(comma)3$(comma)5$(comma)7 'sweep={delta:$${method.loss.delta}}')

sweep-meta-ids: $(STAMP) ## Sweep the number of meta identities (0, 1, 3, 5, 10, 20)
	$(call multirun,sweep-meta-ids,sweep,ids$${method.meta.num_ids}-seed$${seed},method.meta.num_ids=0$(comma)1$(comma)3$(comma)5$(comma)10$(comma)20 'sweep={meta_ids:$${method.meta.num_ids}}')

ARTEFACT ?= table1
report: $(STAMP) ## Rebuild a report from metrics.json files alone: make report ARTEFACT=table1 [DATASET=..]
	$(BIN)/python -m mprd.report $(ARTEFACT) --runs $(call RUNS,$(ARTEFACT)) --dataset $(DATASET) --out $(RESULTS)

SSLR_ROWS := sslr_baseline,sslr_wo_part_cce,sslr_wo_part,sslr
UGA_ROWS := uga,intra,intra_r,intra_bn,lambda055,lambda060,lambda070,lambda075,no_self,raw

reproduce-sslr: $(STAMP) ## SSLR ablation rows (baseline, w/o part and CCE, w/o part, full) + report
	$(BIN)/python -m mprd.train --multirun experiment=$(addprefix sslr/,$(subst $(comma),$(comma)sslr/,$(SSLR_ROWS))) \
		$(call COMMON,sslr) hydra.sweep.dir=$(call RUNS,sslr) 'hydra.sweep.subdir=$${row}-seed$${seed}'
	$(BIN)/python -m mprd.report baselines --runs $(call RUNS,sslr) --dataset $(DATASET) --out $(RESULTS)

reproduce-uga: $(STAMP) ## UGA rows (intra-camera labels; Tables 2-5 of its paper) + report
	$(BIN)/python -m mprd.train --multirun experiment=$(addprefix uga/,$(subst $(comma),$(comma)uga/,$(UGA_ROWS))) \
		$(call COMMON,uga) hydra.sweep.dir=$(call RUNS,uga) 'hydra.sweep.subdir=$${row}-seed$${seed}'
	$(BIN)/python -m mprd.report baselines --runs $(call RUNS,uga) --dataset $(DATASET) --out $(RESULTS)

reproduce-table3: $(STAMP) ## Table 3 rows that need runs here (MPRD with Rank-5/10, SSLR) + report
	$(call multirun,table3,table1/mprd$(comma)sslr/table3,$${row}-seed$${seed})

.PHONY: help install test test-all synthetic smoke train report reproduce-table1 reproduce-sslr reproduce-uga reproduce-table3 reproduce-table2 reproduce-fig4 \
	sweep-mu sweep-k sweep-delta sweep-meta-ids
