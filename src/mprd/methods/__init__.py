"""One module (or package) per method family: baselines (Table 1 simple rows), mprd, mlcr, sslr, uga.
Each `conf/method/*.yaml` names its factory with `_target_`."""
