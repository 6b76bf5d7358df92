"""MPRD (the paper this suite reproduces): structures (Eq. 4), gcn (Eq. 5), losses (Eqs. 2-3, 6, 10),
pairs (§4.2), algorithm (Algorithm 1, Eq. 7) and meta (Z)."""
