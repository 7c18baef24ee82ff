"""Run params: declared once, they become settings overrides, CLI flags and (tests/dags) DAG Params."""

from __future__ import annotations

import pytest

from pipelines.cli import COMMAND_PARAMS, build_parser
from pipelines.core.context import BadRunParameters, settings_with
from pipelines.core.params import RUN_PARAMS, RunParam, overrides_from_params
from pipelines.core.settings import Settings


@pytest.mark.parametrize("param", [p for p in RUN_PARAMS if p.setting], ids=lambda p: p.name)
def test_every_setting_a_param_overrides_exists(param: RunParam) -> None:
    section: object = Settings()
    for key in param.setting or ():
        assert hasattr(section, key), f"{param.name}: settings have no {'.'.join(param.setting or ())}"
        section = getattr(section, key)


def test_params_become_nested_overrides_and_empty_ones_are_left_out() -> None:
    assert overrides_from_params({"num_shards": 3, "top_k": 7, "dry_run_users": None, "unknown": 1}) == {
        "candidates": {"num_shards": 3, "top_k": 7}
    }
    assert overrides_from_params({"force_retrain": True, "skip_digests": True}) == {"force_retrain": True}


def test_an_out_of_range_param_is_a_permanent_error_naming_it() -> None:
    with pytest.raises(BadRunParameters, match="num_shards"):
        settings_with({"num_shards": 0})


def test_every_cli_command_offers_its_params_as_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["nightly", "--ds", "2026-11-22", "--top-k", "7", "--skip-digests"])
    assert args.top_k == 7 and args.skip_digests is True and args.num_shards is None
    for command, params in COMMAND_PARAMS.items():
        flags = {p.flag for p in params}
        help_text = parser._subparsers._group_actions[0].choices[command].format_help()
        assert all(flag in help_text for flag in flags), command
