"""The compact packed store (dtype compact): its bounds, its files, resumable conversion, and its benchmark."""
import filecmp
import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from repro.costs import compact_bytes_on_lite0, imagenet_storage
from repro.crops import crop_rng, sample_rrc_boxes
from repro.labelmaps import cli as labelmaps_cli
from repro.labelmaps import compact
from repro.labelmaps import convert as convert_module
from repro.labelmaps.convert import derive_store, official_to_packed, write_store
from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.examples import example_label_maps, varied_label_maps
from repro.labelmaps.official import save_official
from repro.labelmaps.packed import INDEX, PackedWriter, write_packed
from repro.labelmaps.quantize import bytes_per_image
from repro.labelmaps.reader import open_labelmaps
from repro.labelmaps.verification import verify
from repro.pooling import pool_labels

ROOT = Path(__file__).resolve().parents[1]


def structured_maps(count, k=5, height=15, width=15, classes=1000, per_image=60, seed=0):
    """Sorted maps whose ids come from a per-image set of `per_image` classes: in 3x3 blobs with 10% strays, or,
    with more than 256, everywhere at random (a palette of more than 256 classes)."""
    rng = np.random.default_rng(seed)
    values = np.sort(rng.normal(0, 4, (count, k, height, width)).astype(np.float32), axis=1)[:, ::-1]
    rows, cols = np.meshgrid(np.arange(height) // 3, np.arange(width) // 3, indexing="ij")
    blob = rows * ((width + 2) // 3) + cols
    ids = np.empty((count, k, height, width), dtype=np.int64)
    stray_share = 1.0 if per_image > compact.BYTE_PALETTE else 0.1
    for i in range(count):
        chosen = rng.choice(classes, size=per_image, replace=False)
        index = (blob[None] * 7 + np.arange(k)[:, None, None] * 3) % per_image
        stray = rng.random(index.shape) < stray_share
        index[stray] = rng.integers(0, per_image, int(stray.sum()))
        ids[i] = chosen[index]
        for rank in range(1, k):  # distinct classes at each position, as a top-k map has
            clash = (ids[i, rank][None] == ids[i, :rank]).any(axis=0)
            while clash.any():
                ids[i, rank][clash] = chosen[rng.integers(0, per_image, int(clash.sum()))]
                clash = (ids[i, rank][None] == ids[i, :rank]).any(axis=0)
    return values.copy(), ids


def paths(count):
    return [f"train/n0000000{i % 3}/img_{i}.JPEG" for i in range(count)]


def assert_within_bound(decoded, values):
    spread = values.reshape(len(values), -1).max(axis=1) - values.reshape(len(values), -1).min(axis=1)
    bound = spread / (2 * (2 ** compact.VALUE_BITS - 1)) + 1e-5 * (1 + np.abs(values).max())
    error = np.abs(np.asarray(decoded) - values).reshape(len(values), -1).max(axis=1)
    assert (error <= bound).all(), (error, bound)


@pytest.mark.parametrize("k, height, width, per_image", [(5, 15, 15, 60), (1, 14, 14, 20), (3, 7, 11, 40),
                                                         (5, 15, 15, 400)])
def test_compact_ids_are_lossless_and_values_within_the_stated_bound(tmp_path, k, height, width, per_image):
    values, ids = structured_maps(6, k, height, width, per_image=per_image, seed=k + height)
    values[2] = 1.75  # a constant map decodes exactly
    store = open_labelmaps(write_packed(tmp_path / "c", paths(6), values, ids, dtype="compact"))
    read_values, read_ids = store.read(np.arange(6))
    assert read_ids.dtype == torch.int64 and read_values.dtype == torch.float32
    assert read_values.shape == (6, k, height, width)
    assert np.array_equal(read_ids.numpy(), ids)
    assert_within_bound(read_values.numpy(), values)
    assert np.array_equal(read_values[2].numpy(), values[2])
    palettes = store.records().rows[:, 2]
    assert (palettes > compact.BYTE_PALETTE).any() == (per_image > compact.BYTE_PALETTE)


def test_unsorted_maps_and_a_palette_of_every_class_still_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.normal(0, 3, (3, 5, 15, 15)).astype(np.float32)  # not sorted: the steps wrap modulo 256
    # every entry another class: a palette of 1125 ids up to 60,000 (two-byte palette indices)
    ids = np.stack([rng.permutation(60000)[:5 * 225].reshape(5, 15, 15) for _ in range(3)])
    store = open_labelmaps(write_packed(tmp_path / "c", paths(3), values, ids, num_classes=60000, dtype="compact"))
    read_values, read_ids = store.read([0, 1, 2])
    assert np.array_equal(read_ids.numpy(), ids)
    assert_within_bound(read_values.numpy(), values)


def test_rows_read_in_any_order_with_repeats_mixing_narrow_and_wide_palettes(tmp_path):
    narrow_values, narrow_ids = structured_maps(4, per_image=50, seed=3)
    wide_values, wide_ids = structured_maps(2, per_image=600, seed=4)
    values, ids = np.concatenate([narrow_values, wide_values]), np.concatenate([narrow_ids, wide_ids])
    store = open_labelmaps(write_packed(tmp_path / "c", paths(6), values, ids, dtype="compact"))
    every_values, every_ids = store.read(np.arange(6))
    rows = [5, 0, 5, 3, 4, 0]
    some_values, some_ids = store.read(torch.tensor(rows))
    assert torch.equal(some_values, every_values[rows]) and torch.equal(some_ids, every_ids[rows])
    assert np.array_equal(some_ids.numpy(), ids[rows])
    clone = pickle.loads(pickle.dumps(store))  # as DataLoader workers get it: the files reopened on first read
    assert clone._records is None and torch.equal(clone.read(rows)[1], some_ids)


def test_the_writer_takes_rows_in_any_order_and_a_resumed_writer_appends_what_an_uninterrupted_one_does(tmp_path):
    values, ids = structured_maps(8, seed=5)
    reference = write_packed(tmp_path / "reference", paths(8), values, ids, dtype="compact")

    shuffled = PackedWriter(tmp_path / "shuffled", 8, 5, (15, 15), "compact")
    for start in (6, 0, 2, 4):
        shuffled.write(start, values[start:start + 2], ids[start:start + 2])
    shuffled.finish(paths(8), {"num_classes": 1000, "annotator": None})
    assert all(torch.equal(a, b) for a, b in zip(open_labelmaps(tmp_path / "shuffled").read(np.arange(8)),
                                                  open_labelmaps(reference).read(np.arange(8))))

    partial = tmp_path / "resumed"
    writer = PackedWriter(partial, 8, 5, (15, 15), "compact")
    writer.write(0, values[:4], ids[:4])
    writer.flush()
    writer.write(4, values[4:6], ids[4:6])  # written but not recorded as done when the run is killed
    writer.flush()
    resumed = PackedWriter(partial, 8, 5, (15, 15), "compact", resume=True, done=4)
    resumed.write(4, values[4:], ids[4:])
    resumed.finish(paths(8), {"num_classes": 1000, "annotator": None})
    for name in (compact.RECORDS, compact.ROWS, compact.SCALES, INDEX):
        assert filecmp.cmp(reference / name, partial / name, shallow=False), name


def test_a_damaged_truncated_or_missing_record_names_the_store_and_row(tmp_path):
    values, ids = structured_maps(5, seed=6)
    store_dir = write_packed(tmp_path / "c", paths(5), values, ids, dtype="compact")
    rows = np.load(store_dir / compact.ROWS)
    records = bytearray((store_dir / compact.RECORDS).read_bytes())
    start, length = int(rows[2, 0]), int(rows[2, 1])
    records[start + length // 2] ^= 0xFF
    (store_dir / compact.RECORDS).write_bytes(bytes(records))
    store = open_labelmaps(store_dir)
    with pytest.raises(LabelMapError, match=rf"img_2.JPEG \(row 2 of {store_dir}\) is damaged"):
        store.read([0, 2])
    assert np.array_equal(store.read([1])[1].numpy(), ids[[1]])  # the other rows still read
    report = verify(store_dir, raise_on_failure=False)
    assert not report["ok"] and len(report["problems"]) == 1 and "row 2 of" in report["problems"][0]

    (store_dir / compact.RECORDS).write_bytes(bytes(records[:int(rows[4, 0]) + 10]))
    with pytest.raises(LabelMapError, match=r"img_4.JPEG \(row 4 of .*outside records.bin"):
        open_labelmaps(store_dir).read([4])

    writer = PackedWriter(tmp_path / "gap", 3, 5, (15, 15), "compact")
    writer.write(0, values[:1], ids[:1])
    writer.finish(paths(3), {"num_classes": 1000, "annotator": None})
    with pytest.raises(LabelMapError, match=r"img_1.JPEG \(row 1 of .*never written"):
        open_labelmaps(tmp_path / "gap").read([0, 1])


def test_compact_size_is_measured_from_the_store_and_not_given_by_a_formula(tmp_path):
    values, ids = structured_maps(4, seed=7)
    store = open_labelmaps(write_packed(tmp_path / "c", paths(4), values, ids, dtype="compact"))
    on_disk = sum((tmp_path / "c" / name).stat().st_size for name in (compact.RECORDS, compact.ROWS,
                                                                      compact.SCALES))
    assert store.bytes_per_image == round(on_disk / 4) and store.describe()["dtype"] == "compact"
    assert store.settings["value_bits"] == compact.VALUE_BITS
    with pytest.raises(LabelMapError, match="depends on its maps"):
        bytes_per_image(5, (15, 15), "compact")
    with pytest.raises(LabelMapError, match="compact store"):
        store.arrays()


def test_commands_convert_info_and_verify_a_compact_store(tmp_path, capsys):
    values, ids = structured_maps(5, seed=8)
    for path, v, i in zip(paths(5), values, ids):
        save_official(tmp_path / "official" / f"{Path(path).parent.name}/{Path(path).stem}.pt",
                      torch.from_numpy(v.copy()), torch.from_numpy(i))
    out = tmp_path / "compact"
    assert labelmaps_cli.main(["labelmaps", "convert", str(tmp_path / "official"), str(out),
                               "--dtype", "compact"]) == 0
    size = open_labelmaps(out).bytes_per_image
    assert "dtype: compact" in capsys.readouterr().out
    assert labelmaps_cli.main(["labelmaps", "info", str(out)]) == 0
    assert f"bytes_per_image: {size}" in capsys.readouterr().out
    assert labelmaps_cli.main(["labelmaps", "verify", str(out)]) == 0
    assert labelmaps_cli.main(["labelmaps", "convert", str(out), str(tmp_path / "back")]) == 0  # to official
    back_values, back_ids = open_labelmaps(tmp_path / "back").read(np.arange(5))
    order = np.argsort([f"{Path(p).parent.name}/{Path(p).stem}" for p in paths(5)])
    assert np.array_equal(back_ids.numpy(), ids[order])
    derived = open_labelmaps(derive_store(out, tmp_path / "top2", topk=2))
    assert derived.dtype == "compact" and np.array_equal(derived.read(np.arange(5))[1].numpy(), ids[order][:, :2])


def test_a_killed_conversion_resumes_to_the_store_an_uninterrupted_one_writes(tmp_path, monkeypatch):
    values, ids = structured_maps(10, seed=9)
    source = open_labelmaps(write_packed(tmp_path / "fp32", paths(10), values, ids))
    reference = write_store(source, tmp_path / "reference", dtype="compact", chunk=3)
    commit = convert_module.commit_progress

    def killed_in_the_third_chunk(partial, made_from, done):
        if done == 9:  # the third chunk's records are appended, but the run dies before recording it
            raise KeyboardInterrupt
        commit(partial, made_from, done)

    monkeypatch.setattr(convert_module, "commit_progress", killed_in_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        write_store(source, tmp_path / "run", dtype="compact", chunk=3)
    monkeypatch.undo()
    partial = tmp_path / "run.partial"
    assert json.loads((partial / "progress.json").read_text())["done"] == 6
    assert (partial / compact.RECORDS).stat().st_size > int(np.load(reference / compact.ROWS)[5, :2].sum())

    with pytest.raises(LabelMapError) as refused:
        write_store(source, tmp_path / "run", dtype="compact", topk=2, chunk=3)
    message = str(refused.value)
    assert "topk: 5 -> 2" in message and "--overwrite" in message and "\n" not in message

    reads = []
    original = source.read
    monkeypatch.setattr(source, "read", lambda rows: reads.append(list(rows)) or original(rows))
    write_store(source, tmp_path / "run", dtype="compact", chunk=3)
    assert reads == [[6, 7, 8], [9]]  # only the rows not recorded as done
    assert not partial.exists()
    for name in (compact.RECORDS, compact.ROWS, compact.SCALES, INDEX):
        assert filecmp.cmp(reference / name, tmp_path / "run" / name, shallow=False), name


def test_overwrite_starts_a_conversion_with_other_settings_over(tmp_path, monkeypatch):
    values, ids = structured_maps(4, seed=10)
    source = open_labelmaps(write_packed(tmp_path / "fp32", paths(4), values, ids))
    monkeypatch.setattr(convert_module, "commit_progress", lambda partial, made_from, done: (
        (_ for _ in ()).throw(KeyboardInterrupt) if done == 4 else
        json.dump({"settings": made_from, "done": done}, open(partial / "progress.json", "w"))))
    with pytest.raises(KeyboardInterrupt):
        write_store(source, tmp_path / "run", dtype="int8", chunk=2)
    monkeypatch.undo()
    out = write_store(source, tmp_path / "run", dtype="compact", chunk=2, overwrite=True)
    assert open_labelmaps(out).dtype == "compact" and not (tmp_path / "run.partial").exists()


@pytest.fixture(scope="module")
def lite0_maps():
    _, values, ids = example_label_maps()
    return values.numpy(), ids.numpy()


def test_lite0_maps_fit_the_size_and_pooled_target_budgets(tmp_path, lite0_maps):
    """On a real annotator's maps: <= 2,000 B per image, the costs table's figure, and pooled targets within 0.005
    total variation (mean) of fp32's."""
    values, ids = lite0_maps
    store = open_labelmaps(write_packed(tmp_path / "c", paths(4), values, ids, dtype="compact"))
    rows = store.records().rows
    per_image = rows[:, 1].astype(np.int64) + 8 * 3 + 4 * 2  # record + row table + scales entries
    assert per_image.max() <= 2000
    table = imagenet_storage().set_index(["layout", "topk", "dtype"])
    assert table.loc[("packed", 5, "compact"), "basis"] == "measured on Lite0 maps"
    assert table.loc[("packed", 5, "compact"), "bytes_per_image"] == round(per_image.mean()) == compact_bytes_on_lite0()
    read_values, read_ids = store.read(np.arange(4))
    assert np.array_equal(read_ids.numpy(), ids)
    boxes = torch.as_tensor(sample_rrc_boxes(1000, 1000, 400, crop_rng(0, 0)) / 1000.0, dtype=torch.float32)
    which = np.arange(400) % 4
    reference = pool_labels(torch.from_numpy(values[which]), torch.from_numpy(ids[which]), boxes, 1000)
    pooled = pool_labels(read_values[which], read_ids[which], boxes, 1000)
    distance = 0.5 * (pooled - reference).abs().sum(dim=1)
    assert distance.mean() <= 0.005


def test_varied_maps_keep_the_real_maps_class_counts_and_are_sorted(lite0_maps):
    values, ids = varied_label_maps(*lite0_maps, count=8, seed=1)
    assert values.shape == (8, 5, 15, 15) and (np.diff(values, axis=1) <= 0).all()
    counts = [len(np.unique(ids[i])) for i in range(8)]
    assert counts[:4] == [len(np.unique(lite0_maps[1][i])) for i in range(4)]
    assert not np.array_equal(ids[0], lite0_maps[1][0])


def test_the_store_read_benchmark_runs_at_its_small_size(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_store_reads", ROOT / "benchmarks" / "bench_store_reads.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--small", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "per 10,000 files" in out
    for reader in ("torch.load per file", "OfficialLabelMaps.read", "packed fp32", "packed fp16", "packed int8",
                   "packed compact"):
        assert any(line.startswith(reader) for line in out.splitlines()), reader
