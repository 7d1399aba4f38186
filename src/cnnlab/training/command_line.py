"""The training command's arguments, made ready for Hydra and checked before any job starts.

`study=<name>` is not a config group Hydra could load (conf/study/ holds study files): it stands
for the study's own overrides and `run.study=<name>`, and it makes the study's variants
selectable as `variant=...` (cnnlab.study.variants). Then every job the command would start is composed
and checked as `compose_config` does, so that a mistake in an override is one sentence (exit code
2) before Hydra creates a folder or starts a job.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from hydra._internal.utils import get_args_parser  # the parser @hydra.main itself reads sys.argv with
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig

from cnnlab.errors import UserError
from cnnlab.study import variants
from cnnlab.study.config import check_accelerator
from cnnlab.study.studies import CONF_DIR, compose_config, load_study, override_message, study_overrides
from cnnlab.tracking.uri import has_credentials, move_credentials

# Strategies whose processes Lightning starts by running the command line again (with -m, every
# process would start the whole sweep); ddp_spawn / ddp_fork / ddp_notebook start them in Python.
RELAUNCHING_STRATEGIES = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


def conf_dir_in_use() -> Path:
    """The conf/ a command reads: `--config-dir`, remembered for re-launched DDP processes, else the package's."""
    return Path(os.environ.get("CNNLAB_CONF_DIR", CONF_DIR))


def without_credentials(argv: list[str]) -> list[str]:
    """argv with the credentials of a `tracking.uri=` override moved into MLflow's variables
    (cnnlab.tracking.uri): Hydra records its overrides in `.hydra/`, and DDP re-runs the command."""
    out = []
    for token in argv:
        key = token.partition("=")[0].lstrip("+~")
        if key == "tracking.uri" and "@" in token:
            (override,) = _parse([token])
            values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
            for value in map(str, values):
                if has_credentials(value):
                    userinfo = value.split("//", 1)[1].rpartition("@")[0]
                    move_credentials(value, "tracking.uri")
                    token = token.replace(f"//{userinfo}@", "//", 1)
        out.append(token)
    return out


def prepare(argv: list[str]) -> list[str]:
    """Hydra's arguments for `cnnlab-train argv...`: study= expanded; every job's overrides checked (UserError)."""
    args = get_args_parser().parse_intermixed_args(argv)
    flags = list(argv)  # Hydra's parser takes the overrides only after its flags
    for token in args.overrides:
        flags.remove(token)
    if args.shell_completion or args.config_path or args.config_name:
        return [*flags, *args.overrides]  # completion queries, or another primary config: Hydra's alone
    if args.config_dir:
        os.environ["CNNLAB_CONF_DIR"] = str(Path(args.config_dir).resolve())
    conf_dir = conf_dir_in_use()
    overrides = _parse(args.overrides)
    overrides = _expand_study(overrides, conf_dir)
    if not (args.help or args.hydra_help or args.info is not None):
        configs = _check_jobs(overrides, conf_dir, multirun=args.multirun)
        if configs and not (args.multirun or args.cfg):
            # Hydra makes the run folder before the job starts and reports a failure with a
            # traceback: make it here, where a read-only or full disk becomes one sentence.
            Path(configs[0].run.dir).mkdir(parents=True, exist_ok=True)
    return [*flags, *(o.input_line for o in overrides)]


def _parse(lines: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(lines)
    except OverrideParseException as e:
        raise UserError(override_message(e.override, e.message)) from None


def _expand_study(overrides: list[Override], conf_dir: Path) -> list[Override]:
    """`study=<name>` as the overrides it stands for, first (the command line's own come after it)."""
    study = [o for o in overrides if o.key_or_group == "study" and o.package is None]
    chosen = [o for o in overrides if o.key_or_group == "variant" and o.package is None]
    if not study:
        if chosen:
            value = chosen[0].input_line.split("=", 1)[1]
            raise UserError(f"variant={value} needs study= too, e.g. study=quick variant={value}.")
        return overrides
    if len(study) > 1 or study[0].is_sweep_override():
        raise UserError(
            "study= names one study, whose variants a sweep can run: e.g. -m study=quick variant=mlp_all,cnn_all."
        )
    st = load_study(str(study[0].value()), conf_dir)
    for o in chosen:
        for name in o.sweep_string_iterator() if o.is_sweep_override() else [str(o.value())]:
            st.variant(name)  # an unknown name: one sentence listing the study's variants
    variants.register(st, conf_dir)
    rest = [o for o in overrides if o is not study[0]]
    return [*_parse(study_overrides(st, variant_chosen=bool(chosen))), *rest]


def _check_jobs(overrides: list[Override], conf_dir: Path, multirun: bool) -> list[DictConfig]:
    """Each job's config, composed and checked as Hydra will compose it: the first mistake as one sentence."""
    choices = []
    for o in overrides:
        key = o.get_key_element()
        if key.lstrip("+~").startswith(("hydra.", "hydra/")):
            continue  # Hydra's own settings: Hydra checks them
        if multirun and key.lstrip("+") == "run.dir":
            raise UserError(
                "run.dir does not apply under -m: each job's run folder is <sweep folder>/<job number>; "
                "choose the sweep folder with hydra.sweep.dir=... instead."
            )
        if not o.is_sweep_override():
            choices.append([o.input_line])
        elif not multirun:
            raise UserError(
                f"'{o.input_line}' lists several values: add -m (--multirun) to run one job per value, or write "
                f"a list as {o.key_or_group}=[...] or one text value in quotes."
            )
        else:
            try:
                choices.append([f"{key}={value}" for value in o.sweep_string_iterator()])
            except HydraException:  # glob(): Hydra expands it from the group's options
                return []
    configs = []
    gpus = None
    for job in itertools.product(*choices):
        cfg = compose_config(list(job), conf_dir=conf_dir)
        if cfg.trainer.accelerator not in ("auto", "cpu"):  # a GPU this machine lacks: before any folder
            import torch

            gpus = torch.cuda.device_count() if gpus is None else gpus
            check_accelerator(cfg, gpus)
        configs.append(cfg)
        t = cfg.trainer
        if multirun and t.strategy in RELAUNCHING_STRATEGIES and (t.devices, t.num_nodes) != (1, 1):
            raise UserError(
                f"trainer.strategy={t.strategy} starts its processes by running the command again, which "
                "under -m would start the whole sweep in each; run DDP jobs one at a time (without -m) or "
                "through Snakemake."
            )
    return configs
