"""``mlchain-train``: the entrypoint a training container (or process) runs.

It reads the contract's environment, runs the repository's entry (a script, or a
notebook's code cells: :mod:`mlchain.notebook`) as ``__main__`` with this trial's
params, and takes the gate metric: the one the entry reported with ``sdk.report``,
else the held-out metric the framework hooks captured (:mod:`mlchain.capture`),
whose model it then saves as ``sdk.save_model`` would. Where the metric came from
goes into provenance.json; model files the code wrote go into the artifacts.

Exit codes: 0 trained, 1 the training code raised, 2 the contract environment is
incomplete, 3 the entry broke the contract (no held-out metric reported or found,
or a metrics.json without the gate metric).
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from mlchain import capture, contract
from mlchain.fileio import atomic_write

EXIT_OK = 0
EXIT_CODE_ERROR = 1
EXIT_BAD_ENV = 2
EXIT_CONTRACT = 3
MAX_MODEL_FILE_BYTES = 1024**3
REQUIRED_ENV = (contract.ENV_REPO_DIR, contract.ENV_ENTRY, contract.ENV_OUTPUT_DIR, contract.ENV_PARAMS_FILE)


def _fail(code: int, message: str) -> int:
    print(f"{contract.ERROR_PREFIX}{message}", file=sys.stderr, flush=True)
    return code


def check_metrics(output_dir: Path, metric: str) -> str | None:
    """The contract's end condition; returns what is wrong, or None."""
    path = output_dir / contract.METRICS_FILE
    if not path.is_file():
        return (f"the entry finished without writing {contract.METRICS_FILE}; "
                f"call sdk.report({{'{metric}': <held-out {metric}>}}) at the end of training")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return f"{contract.METRICS_FILE} is not valid JSON ({exc}); write it with sdk.report()"
    if metric not in metrics:
        found = ", ".join(sorted(metrics)) or "nothing"
        return (f"{contract.METRICS_FILE} lacks the gate metric '{metric}' (it has {found}); "
                f"report it with sdk.report(), or set 'metric:' in mlchain.yaml")
    return None


def working_folder(repo: Path) -> Path:
    """Where the entry runs: the repository itself when it is writable (the process runner's
    copy of it), else a copy in /tmp (a container mounts the repository read-only, and code
    that writes ``model.h5`` beside itself must still run). Symlinks stay links."""
    if os.access(repo, os.W_OK):
        return repo
    work = Path(tempfile.mkdtemp(prefix="mlchain-work-")) / repo.name
    try:
        shutil.copytree(repo, work, symlinks=True)
    except OSError as exc:  # /tmp too small for it, say: run in place, where writes beside the code fail
        print(f"mlchain-train: running in the read-only repository (no copy: {exc})", flush=True)
        shutil.rmtree(work.parent, ignore_errors=True)
        return repo
    return work


def _run_entry(work: Path, entry: Path, output: Path) -> None:
    """The entry as ``__main__``: a script through runpy, a notebook cell by cell."""
    # As `python path/to/entry.py` from the repository's root would: the entry's folder first
    # on the path, then the root, then a src/ layout's packages.
    sys.path[:0] = list(dict.fromkeys(str(p) for p in (entry.parent, work, work / "src") if p.is_dir()))
    sys.argv = [str(entry)]
    os.chdir(work)
    if entry.suffix == ".ipynb":
        os.chdir(entry.parent)  # a notebook runs in its own folder, as Jupyter starts its kernel
        from mlchain import notebook

        rel = entry.relative_to(work).as_posix()
        executed = output / contract.ARTIFACTS_DIR / contract.NOTEBOOK_ARTIFACTS / entry.name
        namespace: dict[str, object] = {"__name__": "__main__", "__file__": str(entry)}
        capture.RECORDER.files.update(c.name for c in notebook.code_cells(notebook.load(entry.read_bytes()), rel))
        notebook.run(entry, rel, namespace, executed)
    else:
        runpy.run_path(str(entry), run_name="__main__")


def _take_metric(output: Path, metric: str) -> tuple[str | None, dict[str, object]]:
    """After the entry: what is wrong (or None) and the provenance record. sdk.report's
    metrics.json wins; else the metric the hooks captured is written, and its model saved."""
    from mlchain import sdk

    observations = capture.RECORDER.observations
    if (output / contract.METRICS_FILE).is_file():
        reported = [o for o in observations if o.kind == capture.SDK_REPORT and o.name == metric]
        record: dict[str, object] = {"metric": metric, "source": capture.SDK_REPORT}
        if reported:
            record.update(value=reported[-1].value, call=reported[-1].call, where=reported[-1].where,
                          text=reported[-1].describe())
        return check_metrics(output, metric), record
    choice = capture.choose(observations, metric)
    if choice.observation is None:
        return choice.problem, {"metric": metric, "source": None, "text": choice.problem}
    chosen = choice.observation
    getattr(sdk.report, "__wrapped__", sdk.report)(choice.metrics)  # not an sdk.report of the code
    record = {"metric": metric, "source": chosen.kind, "value": chosen.value, "call": chosen.call,
              "where": chosen.where, "text": chosen.describe()}
    print(f"mlchain-train: {chosen.describe()} (no sdk.report: captured, {chosen.kind})", flush=True)
    if not (output / contract.MODEL_DIR).exists():
        record["model"] = _save_captured_model(chosen.model or capture.RECORDER.last_model())
    return None, record


def _savable(model: object) -> list[object]:
    """What to try to save for a captured model, best first: a search's best estimator (the
    search itself holds every fold's state), then a Keras model an estimator wraps (a
    hand-written scikit-learn wrapper may not pickle; its network does save)."""
    found = [getattr(model, "best_estimator_", None) or model]
    for value in list(vars(found[0]).values()) if hasattr(found[0], "__dict__") else []:
        if any(c.__module__.split(".")[0] in ("keras", "tf_keras") for c in type(value).__mro__):
            found.append(value)
    return found


def _save_captured_model(model: object) -> str | None:
    """Save the model the metric is of, as sdk.save_model does; a model that cannot be saved
    is said, and the trial goes on (it is then not registered)."""
    from mlchain import sdk

    if model is None:
        print("mlchain-train: no fitted model was seen: nothing to save", flush=True)
        return None
    problems = []
    for candidate in _savable(model):
        try:
            sdk.save_model(candidate)
        except Exception as exc:  # noqa: BLE001 - the metric stands without a registrable model
            problems.append(f"{type(candidate).__name__}: {type(exc).__name__}: {exc}")
            continue
        print(f"mlchain-train: saved the {type(candidate).__name__} the metric is of"
              " (as sdk.save_model does)", flush=True)
        return type(candidate).__name__
    shutil.rmtree(sdk.output_dir() / contract.MODEL_DIR, ignore_errors=True)  # no half-written model
    print(f"mlchain-train: could not save the model automatically ({'; '.join(problems)});"
          " call sdk.save_model(model) to choose what to save", flush=True)
    return None


def keep_model_files(work: Path, output: Path, since: float, max_depth: int = 3) -> list[str]:
    """Copy the model files the code wrote in its working folder during this run into the
    output's artifacts (regular files only: a link is never followed)."""
    kept: list[str] = []
    dest = output / contract.ARTIFACTS_DIR / contract.MODEL_FILE_ARTIFACTS
    stack = [(work, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(".") or e.name in ("__pycache__", "node_modules"):
                continue
            if e.is_dir(follow_symlinks=False):
                if depth < max_depth:
                    stack.append((Path(e.path), depth + 1))
                continue
            if not e.is_file(follow_symlinks=False) or not e.name.endswith(contract.MODEL_FILE_SUFFIXES):
                continue
            st = e.stat(follow_symlinks=False)
            if st.st_mtime < since or st.st_size > MAX_MODEL_FILE_BYTES:
                continue
            rel = Path(e.path).relative_to(work)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(e.path, dest / rel, follow_symlinks=False)
            kept.append(rel.as_posix())
    return sorted(kept)


def run() -> int:
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        return _fail(EXIT_BAD_ENV, f"missing environment: {', '.join(missing)} "
                                   "(mlchain-train is started by mlchain's runners, which set these)")
    repo = Path(os.environ[contract.ENV_REPO_DIR])
    name = os.environ[contract.ENV_ENTRY]
    output = Path(os.environ[contract.ENV_OUTPUT_DIR])
    metric = os.environ.get(contract.ENV_METRIC) or contract.DEFAULT_METRIC
    if not (repo / name).is_file():
        return _fail(EXIT_CONTRACT, f"entry {name} not found in the repository; "
                                    "add it, or set 'entry:' in mlchain.yaml")
    output.mkdir(parents=True, exist_ok=True)
    for stale in (contract.METRICS_FILE, contract.PROVENANCE_FILE):
        if (output / stale).exists():
            (output / stale).unlink()  # a restarted attempt must report afresh
    print(f"mlchain-train: running {name} (trial {os.environ.get(contract.ENV_TRIAL_KEY, '?')})",
          flush=True)
    started = time.time()
    work = working_folder(repo)
    entry = work / name
    from mlchain.dataset_trust import trust_dataset_cache

    trust_dataset_cache()
    capture.install([work])
    try:
        _run_entry(work, entry, output)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return _fail(EXIT_CODE_ERROR, f"{entry.name} exited with {exc.code}")
    except BaseException:  # noqa: BLE001 - the training code's failure, reported whole
        traceback.print_exc()
        sys.stderr.flush()
        return _fail(EXIT_CODE_ERROR, f"{entry.name} raised; see the traceback above")
    problem, record = _take_metric(output, metric)
    record["model_files"] = keep_model_files(work, output, started)
    atomic_write(output / contract.PROVENANCE_FILE, json.dumps(record, indent=2, sort_keys=True))
    if problem:
        return _fail(EXIT_CONTRACT, problem)
    print("mlchain-train: done", flush=True)
    return EXIT_OK


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.exit(run())


if __name__ == "__main__":
    main()
