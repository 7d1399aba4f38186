"""A study's variants as Hydra configs, so that `variant=cnn_all` composes, prints and sweeps like a group.

A variant is a list of overrides in its study file (conf/study/<name>.yaml), the one place that
says what it changes. Each is stored in Hydra's ConfigStore as an option of the config group
`variant` (package _global_, listed last in conf/config.yaml's defaults) that does what its
overrides do: a group choice (`model=cnn`) becomes `override /model: cnn` in the option's
defaults list, a value (`model.channels=[8,16]`) becomes part of its body, merged after the
groups. Overrides given on the command line still come last and win, as they always did.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import OmegaConf

from cnnlab.errors import UserError

if TYPE_CHECKING:
    from cnnlab.study.studies import Study

GROUP = "variant"


def as_config(overrides: Iterable[str], conf_dir: Path, where: str) -> dict:
    """A _global_ config that does what the overrides do: group choices in its defaults, values in its body."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as e:
        raise UserError(f"{where}: {str(e).splitlines()[0]}; fix the override in the study file.") from None
    choices: dict[str, object] = {}  # defaults-list key -> choice; a later override of a group wins
    body = OmegaConf.create()
    for o in parsed:
        if o.is_delete() or o.is_sweep_override() or o.package is not None:
            raise UserError(
                f"{where}: '{o.input_line}' cannot be part of a variant; write group=choice, key=value or "
                "+key=value (a sweep belongs on the command line: cnnlab-train -m ...)."
            )
        key = o.key_or_group
        if "." not in key and (Path(conf_dir) / key).is_dir():  # a config group of conf/
            # In a defaults list the first override of a group would win; on a command line, the last.
            choices.pop(f"/{key}", None)
            choices.pop(f"override /{key}", None)
            choices[f"/{key}" if o.is_add() else f"override /{key}"] = o.value()
        else:
            OmegaConf.update(body, key, o.value(), merge=True, force_add=True)
    defaults = [{key: choice} for key, choice in choices.items()]
    return {"defaults": [*defaults, "_self_"], **OmegaConf.to_container(body)}


def register(study: Study, conf_dir: Path, names: Iterable[str] | None = None) -> None:
    """Store the study's variants (or only `names`) as options of the group `variant`, replacing any earlier ones."""
    store = ConfigStore.instance()
    store.repo.pop(GROUP, None)  # another study's variants must not stay selectable
    for name in study.variants if names is None else names:
        study.variant(name)  # an unknown name: one sentence listing the valid ones
        node = as_config(study.overrides_for(name), conf_dir, f"Study '{study.name}', variant '{name}'")
        node.setdefault("run", {}).update(study=study.name, variant=name)
        store.store(group=GROUP, name=name, node=node, package="_global_")
