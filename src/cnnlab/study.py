"""Studies: named variants (each a list of Hydra overrides) and seeds, read from `conf/study/<name>.yaml`.

The study file is the single source of truth for what runs: Snakemake expands it into one job per
(variant, seed) and the training job composes its config from the same file, so a variant's
settings are written in one place only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from cnnlab.config import RunConfig, parent_keys, validate
from cnnlab.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@dataclass(frozen=True)
class Variant:
    name: str
    adds: str  # what this variant adds over its family's baseline, in a few words
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]  # applied to every variant, before the variant's own
    model_overrides: dict[str, tuple[str, ...]]  # per model choice (conf/model/<name>), after `overrides`
    variants: dict[str, Variant]
    report: dict

    def variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise UserError(
                f"Unknown variant '{name}' in study '{self.name}'; valid variants: "
                f"{', '.join(self.variants)}."
            )
        return self.variants[name]

    def overrides_for(self, name: str) -> list[str]:
        """The Hydra overrides of one variant: the study's, its model's, then its own."""
        variant = self.variant(name)
        model = "mlp"  # conf/config.yaml's default
        for o in (*self.overrides, *variant.overrides):
            if o.startswith("model="):
                model = o.split("=", 1)[1]
        return [*self.overrides, *self.model_overrides.get(model, ()), *variant.overrides]


def available_studies(conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (Path(conf_dir) / "study").glob("*.yaml"))


def load_study(name: str, conf_dir: Path = CONF_DIR) -> Study:
    """Read and check `conf/study/<name>.yaml`."""
    path = Path(conf_dir) / "study" / f"{name}.yaml"
    if not path.is_file():
        raise UserError(
            f"Unknown study '{name}'; valid studies: {', '.join(available_studies(conf_dir))} "
            f"(files under {Path(conf_dir) / 'study'})."
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(
            f"Study file {path} is not valid YAML{where}; quote overrides that contain brackets, "
            "e.g. \"model.channels=[8,16]\"."
        ) from None
    if not isinstance(raw, dict):
        raise UserError(f"Study file {path} must be a mapping with 'seeds' and 'variants'.")
    keys = ("description", "seeds", "overrides", "model_overrides", "variants", "report")
    unknown = set(raw) - set(keys)
    if unknown:
        raise UserError(f"Study file {path} has unknown keys {sorted(unknown)}; valid keys: {', '.join(keys)}.")
    seeds = raw.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise UserError(f"Study file {path}: 'seeds' must be a list of non-negative integers.")
    variants = {}
    for vname, spec in (raw.get("variants") or {}).items():
        spec = spec or {}
        if not isinstance(vname, str) or not vname.replace("_", "").isalnum():
            raise UserError(
                f"Study file {path}: variant name '{vname}' must use only letters, digits and '_'."
            )
        variants[vname] = Variant(
            name=vname,
            adds=str(spec.get("adds", "")),
            overrides=tuple(_override_list(spec.get("overrides", []), path, vname)),
        )
    if not variants:
        raise UserError(f"Study file {path} lists no variants; add at least one under 'variants'.")
    return Study(
        name=name,
        description=str(raw.get("description", "")).strip(),
        seeds=tuple(seeds),
        overrides=tuple(_override_list(raw.get("overrides", []), path, "overrides")),
        model_overrides={
            str(m): tuple(_override_list(v, path, f"model_overrides.{m}"))
            for m, v in (raw.get("model_overrides") or {}).items()
        },
        variants=variants,
        report=dict(raw.get("report") or {}),
    )


def _override_list(value, path: Path, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(
            f"Study file {path}: '{where}' overrides must be a list of strings like 'model=cnn'."
        )
    return value


def compose_config(
    overrides: list[str] | tuple[str, ...] = (),
    study: str | None = None,
    variant: str | None = None,
    seed: int | None = None,
    conf_dir: Path = CONF_DIR,
) -> DictConfig:
    """Compose one run's config: defaults, then the study's and the variant's overrides, then ours."""
    all_overrides: list[str] = []
    if study is not None:
        st = load_study(study, conf_dir)
        if variant is not None:
            all_overrides += [*st.overrides_for(variant), f"run.variant={variant}"]
        else:
            all_overrides += [*st.overrides]
        all_overrides += [f"run.study={study}"]
    if seed is not None:
        all_overrides.append(f"seed={seed}")
    all_overrides += list(overrides)
    # The schema makes composition typed: a wrong type or an unknown key fails here.
    ConfigStore.instance().store(name="schema", node=RunConfig)
    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=all_overrides)
    except MissingConfigException as e:
        raise UserError(_one_line(str(e))) from None
    except ConfigCompositionException as e:
        raise UserError(_composition_message(e)) from None
    except (ConfigAttributeError, ConfigKeyError, ValidationError) as e:
        raise UserError(_omegaconf_message(e)) from None
    return validate(cfg)


def _composition_message(e: ConfigCompositionException) -> str:
    cause = e.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError, ValidationError)):
        return _omegaconf_message(cause)
    return _one_line(str(cause or e))


def _omegaconf_message(e: ConfigAttributeError | ConfigKeyError | ValidationError) -> str:
    if not isinstance(e, ValidationError):
        keys = ", ".join(parent_keys(e.full_key))
        return f"Unknown config key '{e.full_key}'; valid keys there: {keys}."
    return f"Bad value for '{e.full_key}': {str(e.msg).splitlines()[0]}."


def _one_line(message: str) -> str:
    """Hydra's messages span lines ('Available options in ...'); fold them into one sentence."""
    lines = [ln.strip() for ln in message.split("Config search path")[0].splitlines() if ln.strip()]
    if len(lines) > 1 and lines[1].startswith("Available options"):
        return f"{lines[0]}; valid choices: {', '.join(lines[2:])}."
    return " ".join(lines)
