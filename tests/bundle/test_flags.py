"""Boolean config ids typed on the command line: ``--merge_tumour false`` arrives as the string "false"
(python-fire converts only ``False``), so every config expression that reads a flag goes through
``unet_monai.utils.as_bool``; a plain ``@flag`` would take "false" as on."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from monai.bundle import ConfigParser

from .common import REPO, cpu_parser

BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "train.json").is_file())
FLAG_READ = re.compile(r"as_bool\(@(\w+), '(\w+)'\)")


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}#{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}#{i}")
    elif isinstance(node, str):
        yield path, node


def _flag_reads() -> list[tuple[str, str, str, str]]:
    """(bundle, config file, config id, flag) for every config value that reads a flag through as_bool."""
    found = []
    for bundle in BUNDLES:
        for config in sorted((bundle / "configs").glob("*.json")):
            if config.name == "metadata.json":
                continue
            for path, value in _walk(json.loads(config.read_text())):
                for flag, named in FLAG_READ.findall(value):
                    assert flag == named, f"{config}: {path} names {named!r} for @{flag}"
                    found.append((bundle.name, config.name, path, flag))
    return found


FLAG_READS = _flag_reads()


def _parser(bundle: str, config: str, **overrides: Any) -> ConfigParser:
    extends_train = config not in ("train.json", "inference.json")  # evaluate / multi-GPU / demo configs
    return cpu_parser(bundle, *(["train.json"] if extends_train else []), config, **overrides)


def test_the_flags_that_need_it_are_read_through_as_bool():
    flags = {flag for *_, flag in FLAG_READS}
    assert {"amp", "anti_aliasing", "merge_tumour", "use_checkpointing"} <= flags
    for bundle in BUNDLES:
        for config in (bundle / "configs").glob("*.json"):
            text = config.read_text()
            for flag in flags:
                assert f'"@{flag}"' not in text and f"if @{flag} " not in text, f"{config} reads @{flag} as is"


@pytest.mark.parametrize("bundle, config, config_id, flag", FLAG_READS, ids=lambda v: str(v))
def test_false_on_the_command_line_means_false(bundle, config, config_id, flag):
    as_typed = _parser(bundle, config, **{flag: "false"}).get_parsed_content(config_id)
    as_json = _parser(bundle, config, **{flag: False}).get_parsed_content(config_id)
    assert as_typed == as_json
    assert _parser(bundle, config, **{flag: "TRUE"}).get_parsed_content(config_id) == _parser(
        bundle, config, **{flag: True}
    ).get_parsed_content(config_id)
    with pytest.raises(Exception) as raised:  # MONAI wraps the expression's error: the cause names the flag
        _parser(bundle, config, **{flag: "maybe"}).get_parsed_content(config_id)
    cause = raised.value.__cause__ or raised.value
    assert str(cause) == f"{flag} must be true or false, got 'maybe'."


@pytest.mark.parametrize("dims", [2, 3])
def test_merge_tumour_false_keeps_three_classes(dims):
    bundle = f"liver_ct_unet3plus_{dims}d_segmentation"
    for config in ("train.json", "inference.json"):
        assert _parser(bundle, config, merge_tumour="false").get_parsed_content("num_classes") == 3
        assert _parser(bundle, config, merge_tumour="true").get_parsed_content("num_classes") == 2


def test_use_checkpointing_false_builds_the_network_without_it():
    parser = _parser(
        "liver_ct_unet3plus_3d_segmentation", "train.json", use_checkpointing="false", features=[4, 8, 8, 16, 16]
    )
    assert parser.get_parsed_content("network").use_checkpointing is False
