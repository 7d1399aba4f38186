"""`_target_` configs: a class or function named in YAML, called with the YAML's other keys.

The groups that grow (`model`, `optimizer`, `schedule`) use Hydra's `_target_` convention, so a new
family, optimizer or schedule is a YAML file naming any importable callable. These helpers locate
the callable and check the keys against its signature, so a typo is one sentence before any job.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import UserError

HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def target_of(cfg, section: str) -> Callable:
    """The callable that cfg's `_target_` names; UserError if there is none or it cannot be imported."""
    target = cfg.get("_target_") if isinstance(cfg, (dict, DictConfig)) else None
    if not target:
        raise UserError(f"The '{section}' config has no '_target_'; name the class or function it builds.")
    try:
        return get_object(str(target))
    except Exception as e:
        cause = e.__cause__ or e
        detail = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise UserError(
            f"Cannot import '{target}' named by {section}._target_ ({detail}); check the name and that its "
            "module is on the Python path."
        ) from None


def arguments(cfg) -> dict:
    """cfg's keys other than Hydra's own, as plain Python values (lists, not ListConfig)."""
    args = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return {k: v for k, v in args.items() if k not in HYDRA_KEYS}


def check_arguments(cfg, section: str, supplied: Iterable[str] = ()) -> Callable:
    """The target, after checking that every key of cfg is one of its parameters cnnlab does not pass itself."""
    target = target_of(cfg, section)
    supplied = set(supplied)
    params = inspect.signature(target).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [name for name, p in params.items() if name != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    settable = [
        name for name in accepted if name not in supplied and params[name].kind is not inspect.Parameter.VAR_KEYWORD
    ]
    for key in arguments(cfg):
        if key in supplied or (key not in accepted and not takes_any):
            name = getattr(target, "__qualname__", str(cfg["_target_"]))
            raise UserError(
                f"Unknown config key '{section}.{key}' for {name}; valid keys there: {', '.join(settable)}."
            )
    return target


def one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
