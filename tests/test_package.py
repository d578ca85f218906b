"""The shape of the package: layers whose imports point one way, short functions, public names,
benches on public names, docs that name files the repo has, logs readable without the compiled
extension."""
import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import uinfo_fast

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "uinfo_fast"
# The layers, top first; a module may import its own layer and the ones below it.
LAYERS = ["experiments", "integrations", "tasks", "tracking", "engine"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules that ``name`` imports anywhere in its body (relative imports resolved,
    ``from pkg import sub`` counted as importing the submodule)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("uinfo_fast")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + is_pkg]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("uinfo_fast"):
                continue
            if target == "uinfo_fast" and [a.name for a in node.names] == ["_C"]:
                continue  # the compiled extension, below every layer
            subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
            out |= subs or {target}
    return {m for m in out if m in modules and m != name}


def _layer(module: str) -> int:
    """Rank of a module's layer: 0 for experiments ... 4 for engine; the package root and its
    private helpers sit outside the layers (-1 above them all, 99 below)."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1
    if parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return 99  # uinfo_fast._lazy, uinfo_fast._C


def test_imports_point_down_the_layers_and_form_no_cycle():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    upward = [(m, dep) for m, deps in graph.items() for dep in deps if _layer(dep) < _layer(m)]
    assert not upward, f"imports running back up the layers: {upward}"
    state: dict[str, int] = {}

    def visit(m, trail):
        state[m] = 1
        for dep in graph[m]:
            if state.get(dep) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(trail + [m, dep])}")
            if dep not in state:
                visit(dep, trail + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_every_layer_folder_exists_and_is_packaged():
    for layer in LAYERS:
        assert (PACKAGE / layer / "__init__.py").exists(), layer
    pyproject = (ROOT / "pyproject.toml").read_text()
    # setuptools finds every subpackage: the include pattern covers them all.
    assert 'include = ["uinfo_fast", "uinfo_fast.*"]' in pyproject


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_public_names_and_version():
    assert uinfo_fast.__all__ == sorted([
        "CaptureOptions", "EstimatorOptions", "FeatureCapture", "MlpProbeFit", "ProbeFit", "RunConfig", "RunLog", "Schedule",
        "TensorBoardSink", "UsableInformation", "UsableInformationCallback", "UsableInformationResult",
        "UsableInformationTrainerCallback", "UsableInfoTracker", "WandbSink", "estimate_usable_information", "fit_mlp_probes", "fit_probes",
        "probe_log_likelihood", "read_log", "sklearn_C"])
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    for name in uinfo_fast.__all__:
        assert getattr(uinfo_fast, name).__name__ == name
    assert re.fullmatch(r"\d+\.\d+\.\d+", uinfo_fast.__version__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        uinfo_fast.nope  # noqa: B018


@pytest.mark.parametrize("package", ["engine", "tracking", "tasks", "tasks.images", "tasks.checkerboard",
                                     "integrations", "experiments"])
def test_every_package_exports_what_it_lists_and_keeps_internals_inside(package):
    import importlib

    module = importlib.import_module(f"uinfo_fast.{package}")
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    for name in module.__all__:
        assert getattr(module, name) is not None
    assert not {"ops", "probe_layout", "FitOptions", "estimate", "BatchIterator", "JsonlLog"} & set(module.__all__)


def test_benches_import_only_public_names():
    private = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("uinfo_fast"):
                names = [a.name for a in node.names]
                if any(p.startswith("_") for p in node.module.split(".")) or any(n.startswith("_") for n in names):
                    private.append(f"{path.name}: from {node.module} import {', '.join(names)}")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "uf":
                if node.attr.startswith("_"):
                    private.append(f"{path.name}: uf.{node.attr}")
    assert not private, private


_FILE_REF = re.compile(r"\b((?:csrc|uinfo_fast|bench|tests|docs|examples|\.ci)/[A-Za-z0-9_./-]*\.(?:py|cpp|cu|h|md|sh|png))")


def test_docs_and_comments_name_only_files_the_repo_has():
    texts = [ROOT / "README.md", ROOT / "setup.py", *ROOT.glob("docs/*.md"), *ROOT.glob("bench/*.*"),
             *PACKAGE.rglob("*.py"), *ROOT.glob("csrc/**/*.*"), *ROOT.glob("tests/*.py"), *ROOT.glob("examples/*")]
    missing = set()
    for path in texts:
        if path.suffix in (".so", ".png", ".json") or not path.is_file():
            continue
        for ref in _FILE_REF.findall(path.read_text(errors="replace")):
            if not ref.startswith("bench/out/") and not (ROOT / ref).exists():
                missing.add(f"{path.relative_to(ROOT)} -> {ref}")
    assert not missing, sorted(missing)


# A file named without its folder ("DESIGN.md", "log.py"); system headers (#include <...>) aside.
_BARE_REF = re.compile(r"(?<![/\w.-])([A-Za-z0-9_][A-Za-z0-9_.-]*\.(?:py|cpp|cu|h|md|sh))\b")


def test_files_named_without_their_folder_are_files_the_repo_has():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True).stdout.split()
    names = {Path(f).name for f in listed} or {p.name for p in ROOT.rglob("*") if ".venv" not in p.parts}
    texts = [ROOT / "README.md", ROOT / "setup.py", *ROOT.glob("docs/*.md"), *ROOT.glob("bench/*.*"),
             *PACKAGE.rglob("*.py"), *ROOT.glob("csrc/**/*.*"), *ROOT.glob("tests/*.py"), *ROOT.glob("examples/*")]
    missing = set()
    for path in texts:
        if path.suffix in (".so", ".png", ".json", ".npz") or not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if not line.lstrip().startswith("#include <"):
                missing.update(f"{path.relative_to(ROOT)} -> {ref}" for ref in _BARE_REF.findall(line)
                               if ref not in names)
    assert not missing, sorted(missing)


def _old_log(run_dir: Path) -> None:
    """A run directory as uinfo-fast 0.1 wrote it: rows name the feature set ``layer``."""
    run_dir.mkdir()
    rows = [{"step": s, "epoch": s / 10, "layer": "layer4", "label_set": lab, "bits": b, "ci_low": b - 0.1,
             "ci_high": b + 0.1, "test_ce_nats": 1.0, "entropy_bits": 2.0, "l2": 1e-3, "converged": True,
             "seconds": 0.1} for s in (0, 10) for lab, b in (("coarse", 0.5 + s / 20), ("fine", 0.3))]
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_log_of_the_old_schema_reads_and_plots_without_the_compiled_extension(tmp_path):
    _old_log(tmp_path / "old")
    out = tmp_path / "old.png"
    code = ("import sys\nfrom uinfo_fast.experiments.cli import main\n"
            f"assert main(['plot', {str(tmp_path / 'old')!r}, '--out', {str(out)!r}]) == 0\n"
            "from uinfo_fast.tracking.log import read_log\n"
            f"rows = read_log({str(tmp_path / 'old' / 'log.jsonl')!r})\n"
            "assert {r['feature_set'] for r in rows} == {'layer4'} and 'layer' not in rows[0]\n"
            "assert 'uinfo_fast._C' not in sys.modules and 'torch' not in sys.modules, 'plotting loaded torch'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 1000
