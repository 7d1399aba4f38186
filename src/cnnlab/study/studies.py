"""Studies: named variants (each a list of Hydra overrides) and seeds, read from `conf/study/<name>.yaml`.

The study file is the single source of truth for what runs: Snakemake expands it into one job per
(variant, seed) and the training job composes its config from the same file, so a variant's
settings are written in one place only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from cnnlab.errors import UserError
from cnnlab.study import variants
from cnnlab.study.config import RunConfig, parent_keys, validate
from cnnlab.study.tuning import read_learning_rates, tuned_override

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


@dataclass(frozen=True)
class Variant:
    name: str
    adds: str  # what this variant adds over its family's baseline, in a few words
    overrides: tuple[str, ...]
    baseline: bool = False  # the family's baseline: every other variant of the family is compared with it
    combined: bool = False  # all of the family's optimizations together
    optimization: str = ""  # the one optimization it adds, for the report's claims (e.g. zscore, dropout)
    sweep_of: str = ""  # in a sweep study: the variant this point of the sweep varies
    sweep_value: object = None  # ... and the value it tries
    regime: str = "full"  # the regime it trains in (the study's `regimes`): its data, budget and seeds


FULL = "full"  # the regime of a variant that names none: the study's own seeds and overrides


@dataclass(frozen=True)
class Regime:
    """A training regime of a study: what its variants' runs share besides the study's settings.

    A claim compares variants of one regime only, so each claim is tested where its mechanism
    applies: e.g. regularization where the baseline overfits (a data-limited regime).
    """

    name: str
    about: str = ""  # what the regime is and which claims it serves, for the report
    seeds: tuple[int, ...] = ()  # empty: the study's seeds
    overrides: tuple[str, ...] = ()  # after the study's and the model's overrides, before the variant's
    model_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per model, after `overrides`
    # What the regime promises and the report checks: each baseline's train - validation gap, in
    # points, is at least this (None: no promise)
    baseline_gap_points: float | None = None


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]  # applied to every variant, before the variant's own
    model_overrides: dict[str, tuple[str, ...]]  # per model choice (conf/model/<name>), after `overrides`
    variants: dict[str, Variant]
    report: dict
    extends: tuple[str, ...] = ()  # the studies this one builds on, nearest first
    tune_lr: str | None = None  # the sweep study whose chosen learning rates this study's runs take
    sweep_key: str | None = None  # in a sweep study: the setting it varies (e.g. optimizer.lr)
    regimes: dict[str, Regime] = field(default_factory=dict)  # name -> regime; `full` always among them
    # in a sweep study: candidates within this many points of validation accuracy of the best are a tie
    sweep_tie_points: float = 0.0

    def variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise UserError(
                f"Unknown variant '{name}' in study '{self.name}'; valid variants: "
                f"{', '.join(self.variants)}."
            )
        return self.variants[name]

    def model_choice(self, name: str) -> str:
        """The conf/model option a variant trains: its last `model=` override (the config's default: mlp)."""
        model = "mlp"  # conf/config.yaml's default
        for o in (*self.overrides, *self.variant(name).overrides):
            if o.startswith("model="):
                model = o.split("=", 1)[1]
        return model

    def regime_of(self, name: str) -> Regime:
        return self.regimes.get(self.variant(name).regime) or Regime(FULL)

    def seeds_of(self, name: str) -> tuple[int, ...]:
        """The seeds a variant runs: its regime's, else the study's."""
        return self.regime_of(name).seeds or self.seeds

    def jobs(self) -> list[tuple[str, int]]:
        """Every (variant, seed) the study trains, in the study's order."""
        return [(v, s) for v in self.variants for s in self.seeds_of(v)]

    def baseline_of(self, name: str) -> str | None:
        """The baseline a variant is compared with: the one of the same model and regime."""
        model, regime = self.model_choice(name), self.variant(name).regime
        return next((v.name for v in self.variants.values()
                     if v.baseline and v.regime == regime and self.model_choice(v.name) == model), None)

    def overrides_for(self, name: str) -> list[str]:
        """The Hydra overrides of one variant: the study's, its model's, its regime's, then its own."""
        variant, model, regime = self.variant(name), self.model_choice(name), self.regime_of(name)
        return [*self.overrides, *self.model_overrides.get(model, ()), *regime.overrides,
                *regime.model_overrides.get(model, ()), *variant.overrides]


AUTO_STUDY = "auto"


def auto_study(gpus: int) -> tuple[str, str]:
    """The study `study=auto` runs on a machine with this many GPUs, and why."""
    if gpus > 0:
        return "lecture", f"this machine has {gpus} GPU{'s' if gpus > 1 else ''}"
    return "cpu", ("this machine has no GPU, and the lecture study is sized for one "
                   "(run it anyway with --config study=lecture; a one-minute check: --config study=smoke)")


AUTO_STUDY_VARIABLE = "CNNLAB_AUTO_STUDY"


def resolve_auto_study(count_gpus) -> str:
    """study=auto, decided once by the first Snakemake of a run, which prints the choice and why; the
    jobs it starts (locally or on a cluster node, whose GPUs may differ) inherit it from the environment."""
    if AUTO_STUDY_VARIABLE not in os.environ:
        chosen, why = auto_study(count_gpus())
        os.environ[AUTO_STUDY_VARIABLE] = chosen
        print(f"cnnlab: study=auto runs the {chosen} study: {why}.", file=sys.stderr)
    return os.environ[AUTO_STUDY_VARIABLE]


def available_studies(conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (Path(conf_dir) / "study").glob("*.yaml"))


STUDY_KEYS = (
    "extends", "description", "seeds", "overrides", "model_overrides", "regimes", "variants", "report", "tune_lr",
    "sweep",
)
VARIANT_KEYS = ("adds", "overrides", "baseline", "combined", "optimization", "regime")
REGIME_KEYS = ("about", "seeds", "overrides", "model_overrides", "baseline_gap_points")


def _read_study_file(name: str, conf_dir: Path) -> tuple[Path, dict]:
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
    unknown = set(raw) - set(STUDY_KEYS)
    if unknown:
        raise UserError(f"Study file {path} has unknown keys {sorted(unknown)}; valid keys: {', '.join(STUDY_KEYS)}.")
    return path, raw


def _merged(name: str, conf_dir: Path, chain: tuple[str, ...] = ()) -> tuple[Path, dict, tuple[str, ...]]:
    """The study file with the studies it extends merged in: the parent first, this file over it.

    seeds, description: this file's if it has them; overrides and each model's overrides: the
    parent's, then this file's (later overrides win); variants and report: the parent's, updated
    by this file's (a variant set to null is dropped).
    """
    if name in chain:
        raise UserError(f"Study '{name}' extends itself through {' -> '.join((*chain, name))}; break the cycle.")
    path, raw = _read_study_file(name, conf_dir)
    parent_name = raw.get("extends")
    if parent_name is None:
        return path, raw, ()
    if not isinstance(parent_name, str):
        raise UserError(f"Study file {path}: 'extends' must name one study, e.g. extends: lecture.")
    _, parent, ancestors = _merged(parent_name, conf_dir, (*chain, name))
    merged = dict(parent)
    merged.pop("sweep", None)  # a sweep's points are its own, never a child's
    for key in ("description", "seeds", "tune_lr", "sweep"):
        if key in raw:
            merged[key] = raw[key]
    merged["overrides"] = [*(parent.get("overrides") or []), *(raw.get("overrides") or [])]
    merged["model_overrides"] = _appended_per_model(parent.get("model_overrides"), raw.get("model_overrides"))
    merged["regimes"] = _merged_regimes(parent.get("regimes") or {}, raw.get("regimes") or {}, path)
    variants = dict(parent.get("variants") or {})
    for vname, spec in (raw.get("variants") or {}).items():
        if spec is None:
            variants.pop(vname, None)
        else:
            variants[vname] = spec
    merged["variants"] = variants
    merged["report"] = {**(parent.get("report") or {}), **(raw.get("report") or {})}
    return path, merged, (parent_name, *ancestors)


def _appended_per_model(parent: dict | None, child: dict | None) -> dict[str, list]:
    """Per-model override lists, the child's appended to the parent's."""
    models = {m: list(v or []) for m, v in (parent or {}).items()}
    for m, v in (child or {}).items():
        models[m] = [*models.get(m, []), *(v or [])]
    return models


def _merged_regimes(parent: dict, child: dict, path: Path) -> dict:
    """Regimes merged as studies are: about and seeds replaced, overrides appended (per model too)."""
    if not isinstance(child, dict):
        raise UserError(f"Study file {path}: 'regimes' must map regime names to their settings.")
    merged = {name: dict(spec or {}) for name, spec in parent.items()}
    for name, spec in child.items():
        spec = spec or {}
        into = merged.setdefault(name, {})
        for key in ("about", "seeds", "baseline_gap_points"):
            if key in spec:
                into[key] = spec[key]
        into["overrides"] = [*(into.get("overrides") or []), *(spec.get("overrides") or [])]
        into["model_overrides"] = _appended_per_model(into.get("model_overrides"), spec.get("model_overrides"))
    return merged


def _regimes(raw: dict, path: Path) -> dict[str, Regime]:
    regimes = {FULL: Regime(FULL)}
    spec_of = raw.get("regimes") or {}
    if not isinstance(spec_of, dict):
        raise UserError(f"Study file {path}: 'regimes' must map regime names to their settings.")
    for name, spec in spec_of.items():
        spec = spec or {}
        if not isinstance(spec, dict) or set(spec) - set(REGIME_KEYS):
            raise UserError(
                f"Study file {path}: regime '{name}' must be a mapping with the keys {', '.join(REGIME_KEYS)}."
            )
        seeds = spec.get("seeds") or []
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise UserError(f"Study file {path}: 'regimes.{name}.seeds' must be a list of non-negative integers.")
        gap = spec.get("baseline_gap_points")
        if gap is not None and (isinstance(gap, bool) or not isinstance(gap, (int, float))):
            raise UserError(f"Study file {path}: 'regimes.{name}.baseline_gap_points' must be a number of points.")
        regimes[str(name)] = Regime(
            name=str(name),
            about=str(spec.get("about", "")).strip(),
            seeds=tuple(seeds),
            overrides=tuple(_override_list(spec.get("overrides") or [], path, f"regimes.{name}.overrides")),
            model_overrides={
                str(m): tuple(_override_list(v or [], path, f"regimes.{name}.model_overrides.{m}"))
                for m, v in (spec.get("model_overrides") or {}).items()
            },
            baseline_gap_points=None if gap is None else float(gap),
        )
    return regimes


def _sweep_points(raw: dict, path: Path) -> dict:
    """A sweep study's variants: each listed variant of its parent once per value of the swept setting.

    sweep: {key: optimizer.lr, values: [0.01, 0.1], variants: [mlp_baseline], overrides: [...]} gives
    the variants mlp_baseline_lr_0_01 and mlp_baseline_lr_0_1, each the parent's variant, then the
    sweep's overrides (its budget), then `key=value`.
    """
    sweep = raw["sweep"]
    if not (isinstance(sweep, dict) and isinstance(sweep.get("key"), str) and isinstance(sweep.get("values"), list)
            and sweep["values"] and isinstance(sweep.get("variants"), list) and sweep["variants"]):
        raise UserError(
            f"Study file {path}: 'sweep' needs key (a setting), values (a list) and variants (a list), "
            "e.g. {key: optimizer.lr, values: [0.01, 0.1], variants: [mlp_baseline]}."
        )
    tie = sweep.get("tie_points", 0)
    if isinstance(tie, bool) or not isinstance(tie, (int, float)) or tie < 0:
        raise UserError(f"Study file {path}: 'sweep.tie_points' must be a number of points of accuracy, 0 or more.")
    parent = raw.get("variants") or {}
    points = {}
    for base in sweep["variants"]:
        if base not in parent:
            raise UserError(f"Study file {path}: sweep variant '{base}' is not a variant of the study it extends.")
        for value in sweep["values"]:
            label = str(value).replace(".", "_").replace("-", "m").replace("+", "")
            points[f"{base}_{sweep['key'].rsplit('.', 1)[-1]}_{label}"] = {
                "adds": f"{sweep['key']}={value}",
                # The sweep's own overrides (its budget) come after the model's, so they win.
                "overrides": [*(parent[base] or {}).get("overrides", []), *_override_list(
                    sweep.get("overrides", []), path, "sweep.overrides"), f"{sweep['key']}={value}"],
                "sweep_of": base,
                "sweep_value": value,
            }
    return points


def load_study(name: str, conf_dir: Path = CONF_DIR) -> Study:
    """Read and check `conf/study/<name>.yaml`, with the studies it extends."""
    path, raw, extends = _merged(name, Path(conf_dir))
    if raw.get("sweep") is not None:
        raw = {**raw, "variants": _sweep_points(raw, path), "tune_lr": None}
    seeds = raw.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise UserError(f"Study file {path}: 'seeds' must be a list of non-negative integers.")
    regimes = _regimes(raw, path)
    variants = {}
    for vname, spec in (raw.get("variants") or {}).items():
        spec = spec or {}
        if not isinstance(vname, str) or not vname.isascii() or not vname.replace("_", "").isalnum():
            raise UserError(
                f"Study file {path}: variant name '{vname}' must use only ASCII letters, digits and '_'."
            )
        if not isinstance(spec, dict) or set(spec) - {*VARIANT_KEYS, "sweep_of", "sweep_value"}:
            raise UserError(
                f"Study file {path}: variant '{vname}' must be a mapping with the keys {', '.join(VARIANT_KEYS)}."
            )
        for flag in ("baseline", "combined"):
            if not isinstance(spec.get(flag, False), bool):
                raise UserError(f"Study file {path}: '{vname}.{flag}' must be true or false.")
        regime = str(spec.get("regime", FULL))
        if regime not in regimes:
            raise UserError(
                f"Study file {path}: variant '{vname}' names the regime '{regime}', which 'regimes' does not "
                f"define; defined: {', '.join(regimes)}."
            )
        variants[vname] = Variant(
            name=vname,
            adds=str(spec.get("adds", "")),
            overrides=tuple(_override_list(spec.get("overrides", []), path, vname)),
            baseline=spec.get("baseline", False),
            combined=spec.get("combined", False),
            optimization=str(spec.get("optimization", "")),
            sweep_of=str(spec.get("sweep_of", "")),
            sweep_value=spec.get("sweep_value"),
            regime=regime,
        )
    if not variants:
        raise UserError(f"Study file {path} lists no variants; add at least one under 'variants'.")
    study = Study(
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
        extends=extends,
        tune_lr=_tune_lr(raw, path, name),
        sweep_key=(raw.get("sweep") or {}).get("key"),
        sweep_tie_points=float((raw.get("sweep") or {}).get("tie_points", 0.0)),
        regimes=regimes,
    )
    _check_one_baseline_per_model(study, path)
    return study


def _tune_lr(raw: dict, path: Path, name: str) -> str | None:
    tune = raw.get("tune_lr")
    if tune is not None and (not isinstance(tune, str) or tune == name):
        raise UserError(f"Study file {path}: 'tune_lr' must name another study, a learning-rate sweep.")
    return tune


def _check_one_baseline_per_model(study: Study, path: Path) -> None:
    seen: dict[tuple[str, str], str] = {}
    for v in study.variants.values():
        if v.baseline:
            key = (study.model_choice(v.name), v.regime)
            if key in seen:
                raise UserError(
                    f"Study file {path}: '{seen[key]}' and '{v.name}' are both marked baseline for model "
                    f"'{key[0]}' in the regime '{key[1]}'; mark one."
                )
            seen[key] = v.name


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
    """Compose one run's config as `cnnlab-train study=... variant=... seed=... <overrides>` does, and check it."""
    all_overrides: list[str] = []
    if study is not None:
        st = load_study(study, conf_dir)
        if variant is not None:
            variants.register(st, conf_dir, [variant])
            all_overrides.append(f"variant={variant}")
        all_overrides += study_overrides(st, variant_chosen=variant is not None)
    elif variant is not None:
        raise UserError(f"variant={variant} needs study= too, e.g. study=quick variant={variant}.")
    if seed is not None:
        all_overrides.append(f"seed={seed}")
    all_overrides += list(overrides)
    for o in all_overrides:
        if not o.split("=", 1)[0].lstrip("+~"):
            raise UserError(override_message(o, "it names no setting"))
    try:
        cfg = _compose(all_overrides, conf_dir)
        apply_tuned_rate(cfg, all_overrides, conf_dir)
    except OverrideParseException as e:
        raise UserError(override_message(e.override, e.message)) from None
    except MissingConfigException as e:
        raise UserError(_one_line(str(e))) from None
    except (ConfigCompositionException, ConfigAttributeError, ConfigKeyError, ValidationError) as e:
        # A key set inside a group's file (a variant's `+key=value`) fails as the context, not the cause.
        cause = (e.__cause__ or e.__context__) if isinstance(e, ConfigCompositionException) else e
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError, ValidationError)):
            raise UserError(_omegaconf_message(cause, all_overrides, conf_dir)) from None
        raise UserError(_one_line(str(cause or e))) from None
    return validate(cfg)


def variant_composer(study: Study, conf_dir: Path = CONF_DIR):
    """variant name -> its composed config in `study`: what the sweep's choice reads family and optimizer from."""
    return lambda variant: compose_config(study=study.name, variant=variant, conf_dir=conf_dir)


def apply_tuned_rate(cfg, overrides: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Set the sweep's chosen value in cfg (still writable) when run.learning_rates names a choice that
    applies; `overrides` are the command line's, the study's and the variant's own come from its file."""
    if not cfg.run.learning_rates:
        return
    explicit = list(overrides)
    if cfg.run.study != "adhoc" and cfg.run.variant != "adhoc":
        study = load_study(cfg.run.study, conf_dir)
        explicit += [*study.overrides, *study.overrides_for(cfg.run.variant)]
    tuned = tuned_override(cfg, read_learning_rates(cfg.run.learning_rates), explicit)
    if tuned is not None:
        OmegaConf.update(cfg, tuned[0], tuned[1], merge=False)


def study_overrides(study: Study, variant_chosen: bool) -> list[str]:
    """What `study=<name>` stands for: the study's own overrides (a variant's config already holds them), its name."""
    return [*([] if variant_chosen else study.overrides), f"run.study={study.name}"]


def register_schema() -> None:
    """The typed schema conf/config.yaml starts from: a wrong type or an unknown key fails in composition."""
    ConfigStore.instance().store(name="schema", node=RunConfig)


def _compose(overrides: list[str], conf_dir: Path) -> DictConfig:
    register_schema()
    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _keys_beside(full_key: str, overrides: list[str], conf_dir: Path) -> list[str]:
    """The keys next to full_key in the config that the group choices alone (model=cnn, ...) give."""
    choices = [o for o in overrides if "." not in o.split("=", 1)[0]]
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    try:
        node = OmegaConf.select(_compose(choices, conf_dir), parent) if parent else _compose(choices, conf_dir)
        return sorted(k for k in node.keys() if not str(k).startswith("_"))
    except Exception:  # the choices themselves do not compose: fall back to the schema
        return parent_keys(full_key)


def _omegaconf_message(e, overrides: list[str], conf_dir: Path) -> str:
    if not isinstance(e, ValidationError):
        keys = ", ".join(_keys_beside(e.full_key, overrides, conf_dir))
        return f"Unknown config key '{e.full_key}'; valid keys there: {keys}."
    return f"Bad value for '{e.full_key}': {str(e.msg).splitlines()[0]}."


def override_message(override: str, detail: str) -> str:
    """Hydra's grammar error (several lines, a caret, a link) as one sentence with the fix."""
    first = str(detail).strip().splitlines()[0] if str(detail).strip() else "not valid"
    if "LexerNoViableAlt" in first or "token recognition error" in first:
        first = "it has a character that Hydra reads only inside quotes"
    return (
        f"Cannot read the override '{override}' ({first}); write key=value, and quote a value that has "
        "spaces, brackets or non-ASCII letters: key='a value'."
    )


def _one_line(message: str) -> str:
    """Hydra's messages span lines ('Available options in ...'); fold them into one sentence."""
    lines = [ln.strip() for ln in message.split("Config search path")[0].splitlines() if ln.strip()]
    if len(lines) > 1 and lines[1].startswith("Available options"):
        return f"{lines[0]}; valid choices: {', '.join(lines[2:])}."
    return " ".join(lines)
