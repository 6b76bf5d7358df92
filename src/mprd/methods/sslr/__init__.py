"""SSLR (Lin et al., CVPR 2020), method family `sslr`."""
