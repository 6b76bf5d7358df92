"""UGA: Unsupervised Graph Association (ICCV 2019), method family `uga`."""
