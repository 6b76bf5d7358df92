"""UGA: Unsupervised Graph Association (ICCV 2019), the tracklet-based seed baseline (`method.family: uga`).

Supervision, stated plainly: UGA learns from tracklets, at most one per person per camera, each with its own
pseudo label inside its camera. On image datasets the paper groups all images of one person in one camera
into one "tracklet", i.e. it uses ground-truth *within-camera* identity grouping (TAUDL/UTAL protocol), a
stronger signal than MPRD, MLCR or SSLR use. `tracklets_from_records` is the one place where this package
reads identities for training ("intra-camera labels" in every report); real tracklets can replace it.

Model (§3, Table 2): backbone → embedding block (the backbone's appended BN → Dropout → FC → BN) →
multi-branch classifier, one bias-free linear branch per camera with one output per tracklet (all
branches are rows of one (M, D) weight matrix). Training (Algorithm 1):

* stage 1, intra-camera: per-camera softmax CE (Eqs. 1-2) on camera-balanced batches;
* transition: tracklet centres (Eq. 3) replace the classifier weights; a fresh Adam starts;
* stage 2, inter-camera: the cross-view graph (CVG, Eqs. 4-5: cross-camera mutual K-NN centres with
  cos > λ, weight = cosine) is rebuilt from the current centre weights at every epoch start, and the
  graph-weighted cross-camera loss with the self-camera term (Eqs. 8-9) trains φ and the centres by
  ordinary gradient descent (Eqs. 10-12 with the sign fixed, spec §5).

One file per section of the paper:

- `tracklets`: the data unit (§4.1): per-camera tracklets from the train split, and UGA Table 6's noise;
- `model`: §3 (Fig. 2, Table 2): the encoder φ (backbone + embedding block);
- `intra_camera`: §3.1: the multi-branch classifier (one softmax per camera) and its loss (Eqs. 1-2);
- `cvg`: §3.2, the cross-view graph (Eqs. 4-6) and its diagnostics (UGA Fig. 4);
- `inter_camera`: §3.2: tracklet centres (Eq. 3) and the graph-weighted cross-camera loss (Eqs. 7-9);
- `module`: Algorithm 1 (both stages, the transition, the per-stage lr) and `build_module` (the `_target_`);
- `config`: `method.*` of `conf/method/uga*.yaml` as dataclasses.

Decisions where the paper is silent are in docs/decisions-uga.md (spec UGA.md §8 numbering).
"""
