"""Dataset discovery (LiTS and MSD layouts), splits by case, k-fold and datalist JSON files."""

from __future__ import annotations

import json
import shutil

import pytest
from monai.data import load_decathlon_datalist

import unet_monai.data as data_pkg
from unet_monai.data import (
    case_id_from_path,
    find_cases,
    generate_dataset,
    load_datalist,
    prepare_datalist,
    save_datalist,
    split_cases,
)

TINY = {"size": 40, "slices": 10}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lits")
    lits = generate_dataset(root / "LiTS", num_cases=3, seed=0, **TINY)
    msd = generate_dataset(root / "Task03_Liver", num_cases=3, seed=0, layout="msd", **TINY)
    return root, {"lits": lits, "msd": msd}


def test_every_public_name_resolves():
    for name in data_pkg.__all__:
        assert getattr(data_pkg, name) is not None


@pytest.mark.parametrize("layout, folder, prefix", [("lits", "LiTS", "volume-"), ("msd", "Task03_Liver", "liver_")])
def test_find_cases_auto_detects_the_layout(datasets, layout, folder, prefix):
    root, written = datasets
    found = find_cases(root / folder)
    assert found == written[layout]
    assert found == find_cases(root / folder, layout=layout)
    assert [r["case"] for r in found] == [f"{prefix}{i}" for i in range(3)]
    assert all(set(r) == {"image", "label", "case"} for r in found)


def test_msd_found_from_its_parent_and_without_dataset_json(datasets, tmp_path):
    root, _written = datasets
    parent = tmp_path / "Decathlon"
    shutil.copytree(root / "Task03_Liver", parent / "Task03_Liver")
    assert [r["case"] for r in find_cases(parent)] == ["liver_0", "liver_1", "liver_2"]
    (parent / "Task03_Liver" / "dataset.json").unlink()
    (parent / "Task03_Liver" / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"AppleDouble junk")
    assert [r["case"] for r in find_cases(parent / "Task03_Liver")] == ["liver_0", "liver_1", "liver_2"]


def test_lits_in_batch_subfolders_sorted_numerically_with_hidden_files_ignored(datasets, tmp_path):
    root, _ = datasets
    for i, batch in [(0, "Training Batch 1"), (1, "Training Batch 1"), (2, "Training Batch 2")]:
        (tmp_path / batch).mkdir(exist_ok=True)
        shutil.copy(root / "LiTS" / f"volume-{i}.nii.gz", tmp_path / batch / f"volume-{i * 5}.nii.gz")
        shutil.copy(root / "LiTS" / f"segmentation-{i}.nii.gz", tmp_path / batch / f"segmentation-{i * 5}.nii.gz")
    (tmp_path / "._volume-99.nii").write_bytes(b"junk")
    assert [r["case"] for r in find_cases(tmp_path)] == ["volume-0", "volume-5", "volume-10"]


def test_find_cases_errors(datasets, tmp_path):
    root, _ = datasets
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_cases(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="is empty"):
        find_cases(empty)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "scan_01.nii.gz").write_bytes(b"x")
    (odd / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"cannot recognise .*notes\.txt, scan_01\.nii\.gz.*LiTS layout"):
        find_cases(odd)
    with pytest.raises(ValueError, match="layout must be"):
        find_cases(root / "LiTS", layout="nnunet")


def test_lits_missing_segmentation_and_duplicates(datasets, tmp_path):
    root, _ = datasets
    shutil.copytree(root / "LiTS", tmp_path / "d")
    (tmp_path / "d" / "segmentation-1.nii.gz").unlink()
    with pytest.raises(ValueError, match="no segmentation-N file: volume-1"):
        find_cases(tmp_path / "d")
    records = find_cases(tmp_path / "d", require_labels=False)
    assert "label" not in records[1] and "label" in records[0]
    shutil.copy(tmp_path / "d" / "volume-0.nii.gz", tmp_path / "d" / "volume-0.nii")
    with pytest.raises(ValueError, match="more than one file for the same case: case 0"):
        find_cases(tmp_path / "d")


def test_msd_missing_file_and_broken_json(datasets, tmp_path):
    root, _ = datasets
    shutil.copytree(root / "Task03_Liver", tmp_path / "t")
    (tmp_path / "t" / "labelsTr" / "liver_2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"liver_2\.nii\.gz"):
        find_cases(tmp_path / "t")
    (tmp_path / "t" / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"cannot read .*dataset\.json"):
        find_cases(tmp_path / "t")


def test_case_id_from_path():
    assert case_id_from_path("/a/volume-12.nii.gz") == "volume-12"
    assert case_id_from_path("liver_3.nii") == "liver_3"
    assert case_id_from_path("x/ct.v2.mha") == "ct.v2"


def _records(n: int) -> list[dict]:
    return [
        {"image": f"/d/volume-{i}.nii", "label": f"/d/segmentation-{i}.nii", "case": f"volume-{i}"} for i in range(n)
    ]


@pytest.mark.parametrize("n, fraction, expected_val", [(10, 0.2, 2), (131, 0.2, 26), (3, 0.1, 1), (5, 0.0, 0)])
def test_split_is_disjoint_complete_and_sized(n, fraction, expected_val):
    train, val = split_cases(_records(n), val_fraction=fraction, seed=0)
    assert len(val) == expected_val and len(train) + len(val) == n
    assert not {r["case"] for r in train} & {r["case"] for r in val}


def test_split_is_deterministic_and_independent_of_input_order():
    records = _records(20)
    a = split_cases(records, seed=3)
    b = split_cases(list(reversed(records)), seed=3)
    assert {r["case"] for r in a[1]} == {r["case"] for r in b[1]}
    assert {r["case"] for r in a[1]} != {r["case"] for r in split_cases(records, seed=4)[1]}


def test_adding_a_case_moves_few_others():
    before = {r["case"] for r in split_cases(_records(50), val_fraction=0.2)[1]}
    after = {r["case"] for r in split_cases(_records(51), val_fraction=0.2)[1]}
    assert len(before & after) >= len(before) - 1


def test_k_fold_validates_every_case_exactly_once():
    records = _records(23)
    seen: list[str] = []
    for fold in range(5):
        train, val = split_cases(records, fold=fold, num_folds=5, seed=1)
        assert len(train) + len(val) == 23 and len(val) in (4, 5)
        assert not {r["case"] for r in train} & {r["case"] for r in val}
        seen += [r["case"] for r in val]
    assert sorted(seen) == sorted(r["case"] for r in records)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"fold": 5, "num_folds": 5}, "fold must be"),
        ({"fold": 0, "num_folds": 1}, "num_folds"),
    ],
)
def test_split_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_cases(_records(10), **kwargs)


def test_split_errors_on_duplicates_and_too_few_cases():
    with pytest.raises(ValueError, match=r"duplicated.*volume-1"):
        split_cases(_records(3) + _records(2)[1:])
    with pytest.raises(ValueError, match="at least 2 cases"):
        split_cases(_records(1), val_fraction=0.2)
    with pytest.raises(ValueError, match="at least 5 cases"):
        split_cases(_records(3), fold=0)


@pytest.mark.parametrize("relative", [False, True])
def test_datalist_json_round_trip_and_monai_compatibility(datasets, tmp_path, relative):
    _root, written = datasets
    train, val = split_cases(written["lits"], val_fraction=0.34)
    path = save_datalist(tmp_path / "datalist.json", train, val, metadata={"seed": 0}, relative=relative)
    content = json.loads(path.read_text())
    assert content["metadata"] == {"seed": 0}
    assert content["training"][0]["image"].startswith("/") != relative
    assert load_datalist(path, "training", check_files=True) == train
    assert load_datalist(path, "validation") == val
    monai_val = load_decathlon_datalist(path, data_list_key="validation")
    assert [r["image"] for r in monai_val] == [r["image"] for r in val]
    assert not list(tmp_path.glob(".*.tmp*"))  # written through atomic_path: no temporary left


def test_load_datalist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_datalist(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="cannot read datalist"):
        load_datalist(tmp_path / "bad.json")
    save_datalist(tmp_path / "ok.json", _records(2))
    with pytest.raises(ValueError, match=r"no list 'testing'.*\['training', 'validation'\]"):
        load_datalist(tmp_path / "ok.json", "testing")
    with pytest.raises(FileNotFoundError, match="case 'volume-0': image file"):
        load_datalist(tmp_path / "ok.json", check_files=True)


def test_prepare_datalist_saves_a_reproducible_split(datasets, tmp_path):
    root, _ = datasets
    out = prepare_datalist(root / "LiTS", tmp_path / "datalist.json", val_fraction=0.34, seed=2)
    assert load_datalist(tmp_path / "datalist.json", "validation") == out["validation"]
    assert prepare_datalist(root / "LiTS", None, val_fraction=0.34, seed=2) == out
    meta = json.loads((tmp_path / "datalist.json").read_text())["metadata"]
    assert meta["seed"] == 2 and meta["num_cases"] == 3
