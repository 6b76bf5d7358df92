"""From the composed Hydra config to objects: the run context a method factory receives, `build_method`
(`hydra.utils.instantiate` on `conf/method/*.yaml`'s `_target_`) and the one unknown-key check that every
config-to-dataclass mapper uses (a typo must fail, naming the key, never be ignored)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

#: method keys read by `mprd.train`, `mprd.supervision` and the reports, never by a factory
DESCRIPTIVE_KEYS = ("name", "family", "camstyle", "supervision")


def unknown_keys(cls: type, values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The keys of `values` that are not fields of the dataclass `cls`, sorted, with `prefix` prepended."""
    names = {f.name for f in fields(cls)}
    return [f"{prefix}{k}" for k in sorted(set(values) - names)]


def dataclass_from(cls: type, values: Mapping[str, Any] | None, where: str) -> Any:
    """`cls(**values)`; unknown keys raise a ValueError naming them and the accepted ones."""
    values = dict(values or {})
    unknown = unknown_keys(cls, values)
    if unknown:
        expected = ", ".join(sorted(f.name for f in fields(cls)))
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (expected a subset of {expected})")
    return cls(**values)


@dataclass
class RunContext:
    """What a method factory needs besides its own `method.*` keys: the run's config, data and backbone."""

    cfg: DictConfig
    datamodule: Any
    backbone: torch.nn.Module

    @property
    def train(self) -> list[Any]:
        return self.datamodule.data.train

    def train_pids(self) -> torch.Tensor:
        return torch.tensor([r.pid for r in self.train])

    def train_camids(self) -> torch.Tensor:
        return torch.tensor([r.camid for r in self.train])

    def section(self, key: str) -> dict[str, Any]:
        """`cfg.<key>` as a resolved plain dict (e.g. `optim`, `gcn`)."""
        value = OmegaConf.to_container(self.cfg[key], resolve=True)
        assert isinstance(value, dict)
        return value


def method_arguments(method: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """`method.*` resolved, without the descriptive keys: what `_target_` is called with."""
    raw = OmegaConf.to_container(method, resolve=True) if isinstance(method, DictConfig) else dict(method)
    assert isinstance(raw, dict)
    return {k: v for k, v in raw.items() if k not in DESCRIPTIVE_KEYS}


def check_arguments(target: str, arguments: Mapping[str, Any]) -> None:
    """Refuse a `method.*` key the factory does not take, naming it (before anything is built)."""
    import hydra.utils

    params = inspect.signature(hydra.utils.get_method(target)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the factory checks its keys itself (sslr, uga: their config mappers)
    accepted = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL} - {"run"}
    unknown = sorted(set(arguments) - accepted - {"_target_"})
    if unknown:
        raise ValueError(f"method: unknown key(s) {', '.join(unknown)} for {target} "
                         f"(accepted: {', '.join(sorted(accepted))})")


def build_method(cfg: DictConfig, datamodule: Any, backbone: torch.nn.Module) -> Any:
    """The LightningModule of `cfg.method`: `hydra.utils.instantiate` calls its `_target_` with its keys."""
    import hydra.utils

    arguments = method_arguments(cfg.method)
    target = arguments.get("_target_")
    if not target:
        raise ValueError(f"method {cfg.method.get('name')!r} has no _target_ (conf/method/*.yaml names its factory)")
    try:
        hydra.utils.get_method(target)
    except Exception as err:  # hydra reports an unimportable path as an ImportError or ValueError
        raise ValueError(f"method._target_={target!r}: cannot import it ({err})") from err
    check_arguments(target, arguments)
    # instantiate binds the method's keys; the run context (live objects, not config) is passed at the call
    factory = hydra.utils.instantiate(arguments, _partial_=True, _recursive_=False, _convert_="all")
    return factory(run=RunContext(cfg, datamodule, backbone))
