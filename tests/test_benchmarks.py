"""The benchmarks of label-map generation and training data loading run at their small sizes (no timing is
asserted: the machines that run the tests differ)."""
import importlib.util
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(out: str, header: str) -> list[list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [header])
    return [line.split() for line in lines[start + 1:] if line.strip()]


def test_the_annotation_benchmark_runs_at_its_small_size(tmp_path, capsys):
    benchmark("bench_annotation").main(["--small", "--workers", "0", "1", "--dir", str(tmp_path)])
    rows = table(capsys.readouterr().out, "side")
    sides = [" ".join(row[:-3]) for row in rows]
    assert sides == ["bare forward model(images)", "generation, images in memory",
                     "generation from JPEGs, 0 worker(s)", "generation from JPEGs, 1 worker(s)"]
    assert rows[0][-2] == "1.000" and all(float(row[-3]) > 0 for row in rows)
    assert not (tmp_path / "store").exists()  # every generated store is removed after its timing


def test_the_loader_benchmark_runs_at_its_small_size(tmp_path, capsys):
    benchmark("bench_loader").main(["--small", "--dir", str(tmp_path)])
    rows = table(capsys.readouterr().out, "workers")
    assert [row[0] for row in rows] == ["0", "1"]
    assert all(float(value) > 0 for row in rows for value in row[1:4])


def test_the_pooling_share_benchmark_runs_at_its_small_size(capsys):
    benchmark("bench_pooling_share").main(["--small"])
    lines = capsys.readouterr().out.splitlines()
    assert "DDP with 1 process" in lines[0] and "batch 4" in lines[0]
    shares = [line for line in lines if "of a step" in line]
    assert len(shares) == 2 and all(float(line.split("(")[1].split("%")[0]) >= 0 for line in shares)
