"""SSLR (Lin et al., CVPR 2020): unsupervised re-ID by softened similarity learning, method family `sslr`.

Stage 0 trains an instance classifier over a non-parametric lookup table V (Eq. 1, one class per training
image) with one-hot targets (Eq. 2). Each iteration s = 1..S then (1) extracts the L2-normalised global and
p part features of every training image, (2) builds the dissimilarity D (Eqs. 5-7: global distance, part
distance, cross-camera encouragement) and takes each image's reliable set = its k smallest-D images, self
excluded, and (3) fine-tunes with the softened target (Eqs. 3-4).

One file per section of the paper:

- `baseline`: §3.1, stage 0: the embedding head and the non-parametric classifier over V (Eq. 1);
- `softened`: §3.2, softened similarity learning: the softened target (Eq. 3) and loss (Eqs. 2, 4);
- `similarity`: §3.3, similarity estimation: part features and distance (Eq. 5), cross-camera encouragement
  (Eq. 6), the dissimilarity D (Eq. 7) and the reliable sets;
- `schedule`: §4 (Fig. 2): stage 0, then S iterations, and the per-epoch learning rate;
- `module`: the LightningModule that runs Fig. 2 in one fit, and `build_module` (the `_target_` of the rows);
- `config`: `method.*` of `conf/method/sslr*.yaml` as dataclasses.

Spec decisions (SSLR.md §6.1; docs/decisions-sslr.md): embedding pool-5 -> FC -> BN -> L2-normalise ->
dropout 0.5 feeds Eq. 1 and the table; V_y <- normalise(V_y / 2 + v / 2) after each batch, V initialised
from the initial network; D on L2-normalised pool-5 and part features, not squared; camera IDs are used
(CCE), identity labels never (they only feed the reliable-set precision diagnostic).
"""
