"""Studies: named variants (each a list of Hydra overrides) and seeds, read from `conf/study/<name>.yaml`.

The study file is the single source of truth for what runs: Snakemake expands it into one job per
(variant, seed) and the training job composes its config from the same file, so a variant's
settings are written in one place only.
"""

from __future__ import annotations

import json
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
from cnnlab.study.tuning import Grid, Tuning, read_choices, tuned_override

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
RECORDS_DIR = Path(__file__).resolve().parents[3] / "docs" / "results"  # recorded studies (bench.results_table)


@dataclass(frozen=True)
class Variant:
    name: str
    adds: str  # what this variant adds over its family's baseline, in a few words
    overrides: tuple[str, ...]
    baseline: bool = False  # the family's baseline: every other variant of the family is compared with it
    combined: bool = False  # all of the family's optimizations together
    optimization: str = ""  # the one optimization it adds, for the report's claims (e.g. zscore, dropout)
    sweep_of: str = ""  # in a tuning study: the variant this point tunes
    sweep_key: str = ""  # ... the setting it varies
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
    tuning: Tuning | None = None  # each variant's own hyperparameter and the study that tunes it
    is_sweep: bool = False  # a tuning study: its variants are the points of its parent's grids
    regimes: dict[str, Regime] = field(default_factory=dict)  # name -> regime; `full` always among them
    parent: str | None = None  # a tuning study's: the study whose grids it runs

    @property
    def tuning_study(self) -> str | None:
        """The tuning study whose choices this study's runs take (None: no runs to wait for; a tuning study's
        `tuning` is its parent's plan, which its own runs do not take)."""
        return self.tuning.study if self.tuning and not self.is_sweep else None

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
    "extends", "description", "seeds", "overrides", "model_overrides", "regimes", "variants", "report", "tuning",
    "sweep",
)
TUNING_KEYS = ("study", "tie_points", "grids", "from_record")
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
    for key in ("description", "seeds", "sweep"):
        if key in raw:
            merged[key] = raw[key]
    merged["tuning"] = _merged_tuning(parent.get("tuning"), raw.get("tuning"), path)
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


def _merged_tuning(parent, child, path: Path):
    """The child's tuning settings over the parent's; grids merged per variant; `study` and
    `from_record` replace each other; `tuning: null` in the child drops the parent's."""
    if child is None:
        return parent
    if not isinstance(child, dict):
        raise UserError(f"Study file {path}: 'tuning' must be a mapping with the keys {', '.join(TUNING_KEYS)}.")
    merged = dict(parent or {})
    for exclusive in ("study", "from_record"):
        if exclusive in child:
            merged.pop("from_record" if exclusive == "study" else "study", None)
    merged.update({k: v for k, v in child.items() if k != "grids"})
    merged["grids"] = {**(merged.get("grids") or {}), **(child.get("grids") or {})}
    return merged


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
    """A tuning study's variants: each tuned variant of its parent once per value of its grid.

    sweep: {overrides: {full: [trainer.max_epochs=3], limited: []}} gives, for a parent grid
    `mlp_l2: {key: regularization.l2, values: [0.001, 0.01]}`, the points mlp_l2_l2_0_001 and
    mlp_l2_l2_0_01: each the parent's variant, then the sweep's budget for its regime, then `key=value`.
    """
    sweep = raw["sweep"]
    tuning = raw.get("tuning") or {}
    grids = _grids(tuning.get("grids"), path)
    budget = sweep.get("overrides", []) if isinstance(sweep, dict) else None
    if budget is None or not (isinstance(budget, (list, dict))) or not [g for g in grids.values() if not g.same_as]:
        raise UserError(
            f"Study file {path}: 'sweep' needs the study it extends to have tuning grids (tuning.grids) and may set "
            "the budget of each point per regime, e.g. {overrides: {full: [trainer.max_epochs=3], limited: []}}."
        )
    parent = raw.get("variants") or {}

    def budget_of(regime: str) -> list[str]:
        chosen = budget.get(regime, []) if isinstance(budget, dict) else budget
        return _override_list(chosen or [], path, f"sweep.overrides.{regime}")

    points = {}
    for name, grid in grids.items():
        if name not in parent:
            raise UserError(f"Study file {path}: tuning grid variant '{name}' is not a variant of the study.")
        if grid.same_as:
            continue
        spec = parent[name] or {}
        regime = spec.get("regime", FULL)
        for value in grid.values:
            label = str(value).replace(".", "_").replace("-", "m").replace("+", "")
            points[f"{name}_{grid.key.rsplit('.', 1)[-1]}_{label}"] = {
                "adds": f"{grid.key}={value}", "regime": regime,
                # The sweep's own overrides (its budget) come after the model's and the regime's, so they win.
                "overrides": [*spec.get("overrides", []), *budget_of(regime), f"{grid.key}={value}"],
                "sweep_of": name, "sweep_key": grid.key, "sweep_value": value,
            }
    return points


def _grids(raw, path: Path) -> dict[str, Grid]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"Study file {path}: 'tuning.grids' must map variants to {{key: <setting>, values: [...]}}.")
    grids = {}
    for name, spec in raw.items():
        if isinstance(spec, dict) and set(spec) == {"same_as"} and isinstance(spec["same_as"], str):
            grids[str(name)] = Grid(same_as=spec["same_as"])
            continue
        if not (isinstance(spec, dict) and set(spec) == {"key", "values"} and isinstance(spec["key"], str)
                and isinstance(spec["values"], list) and spec["values"]
                and len({str(v) for v in spec["values"]}) == len(spec["values"])
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec["values"])):
            raise UserError(
                f"Study file {path}: tuning grid '{name}' must be {{key: <setting>, values: [distinct numbers, the "
                "one a tie goes to first]}} or {same_as: <another tuned variant>}, e.g. "
                "{key: optimizer.lr, values: [0.01, 0.1]}."
            )
        grids[str(name)] = Grid(key=spec["key"], values=tuple(spec["values"]))
    for name, grid in grids.items():
        if grid.same_as and (grid.same_as not in grids or grids[grid.same_as].same_as):
            raise UserError(f"Study file {path}: tuning grid '{name}' is same_as '{grid.same_as}', which has no grid "
                            "of its own.")
    return grids


def _tuning(raw: dict, path: Path, name: str | None) -> Tuning | None:
    """The study's tuning plan; name None: a tuning study reading its parent's."""
    spec = raw.get("tuning")
    if not spec:
        return None
    if set(spec) - set(TUNING_KEYS):
        raise UserError(f"Study file {path}: 'tuning' has unknown keys {sorted(set(spec) - set(TUNING_KEYS))}; "
                        f"valid keys: {', '.join(TUNING_KEYS)}.")
    study = spec.get("study")
    if study is not None and (not isinstance(study, str) or (name is not None and study == name)):
        raise UserError(f"Study file {path}: 'tuning.study' must name another study, a tuning study with 'sweep:'.")
    tie = spec.get("tie_points", 1.0)
    if isinstance(tie, bool) or not isinstance(tie, (int, float)) or tie < 0:
        raise UserError(f"Study file {path}: 'tuning.tie_points' must be a number of points of accuracy, 0 or more.")
    return Tuning(study=study, tie_points=float(tie), grids=_grids(spec.get("grids"), path),
                  from_record=spec.get("from_record"))


def recorded_choices(record: str) -> dict:
    """variant -> {setting, value}: the tuned values the recorded study `record` chose (docs/results/)."""
    path = RECORDS_DIR / f"{record}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"The recorded study {path} cannot be read ({e}); tuning.from_record needs it.") from None
    return data.get("tuning") or {}


def load_study(name: str, conf_dir: Path = CONF_DIR) -> Study:
    """Read and check `conf/study/<name>.yaml`, with the studies it extends."""
    path, raw, extends = _merged(name, Path(conf_dir))
    parent_tuning = None
    if raw.get("sweep") is not None:
        parent_tuning = _tuning(raw, path, None)
        # A tuning point's seeds are the tuning study's own, in every regime.
        regimes = {r: {**(spec or {}), "seeds": []} for r, spec in (raw.get("regimes") or {}).items()}
        raw = {**raw, "variants": _sweep_points(raw, path), "tuning": None, "regimes": regimes}
    tuning = _tuning(raw, path, name)
    if tuning is not None and tuning.from_record:
        # The values a recorded study's tuning chose, written into each variant as its own overrides.
        chosen = recorded_choices(tuning.from_record)
        raw = {**raw, "variants": {
            v: ({**spec, "overrides": [*spec.get("overrides", []), f"{chosen[v]['setting']}={chosen[v]['value']}"]}
                if v in chosen and isinstance(spec, dict) else spec)
            for v, spec in (raw.get("variants") or {}).items()}}
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
        if not isinstance(spec, dict) or set(spec) - {*VARIANT_KEYS, "sweep_of", "sweep_key", "sweep_value"}:
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
            sweep_key=str(spec.get("sweep_key", "")),
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
        tuning=parent_tuning if raw.get("sweep") is not None else tuning,
        is_sweep=raw.get("sweep") is not None,
        regimes=regimes,
        parent=extends[0] if raw.get("sweep") is not None and extends else None,
    )
    _check_one_baseline_per_model(study, path)
    if study.tuning and not study.is_sweep:
        for v in study.tuning.grids or {}:
            if v not in study.variants:
                raise UserError(f"Study file {path}: tuning grid variant '{v}' is not a variant of the study.")
    return study


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
        apply_tuned_value(cfg, list(overrides))
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


def apply_tuned_value(cfg, overrides: list[str]) -> None:
    """Set the tuning's chosen value in cfg (still writable) when run.tuned names a choice for the run's
    variant; `overrides` are the command line's, which win over it."""
    if not cfg.run.tuned:
        return
    tuned = tuned_override(str(cfg.run.variant), read_choices(cfg.run.tuned), list(overrides))
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
