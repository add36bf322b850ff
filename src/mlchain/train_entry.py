"""``mlchain-train``: the entrypoint a training container (or process) runs.

It reads the contract's environment, runs the repository's entry as
``__main__`` with this trial's params, and checks that the entry reported the
gate metric. Exit codes: 0 trained, 1 the training code raised, 2 the contract
environment is incomplete, 3 the entry broke the contract (no metrics.json, or
no gate metric in it).
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import traceback
from pathlib import Path

from mlchain import contract

EXIT_OK = 0
EXIT_CODE_ERROR = 1
EXIT_BAD_ENV = 2
EXIT_CONTRACT = 3
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


def run() -> int:
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        return _fail(EXIT_BAD_ENV, f"missing environment: {', '.join(missing)} "
                                   "(mlchain-train is started by mlchain's runners, which set these)")
    repo = Path(os.environ[contract.ENV_REPO_DIR])
    entry = repo / os.environ[contract.ENV_ENTRY]
    output = Path(os.environ[contract.ENV_OUTPUT_DIR])
    metric = os.environ.get(contract.ENV_METRIC) or contract.DEFAULT_METRIC
    if not entry.is_file():
        return _fail(EXIT_CONTRACT, f"entry {entry.name} not found in the repository; "
                                    "add it, or set 'entry:' in mlchain.yaml")
    output.mkdir(parents=True, exist_ok=True)
    stale = output / contract.METRICS_FILE
    if stale.exists():
        stale.unlink()  # a restarted attempt must report afresh
    print(f"mlchain-train: running {entry.name} (trial {os.environ.get(contract.ENV_TRIAL_KEY, '?')})",
          flush=True)
    from mlchain.dataset_trust import trust_dataset_cache

    trust_dataset_cache()
    sys.path.insert(0, str(repo))
    sys.argv = [str(entry)]
    try:
        os.chdir(repo)
        runpy.run_path(str(entry), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return _fail(EXIT_CODE_ERROR, f"{entry.name} exited with {exc.code}")
    except BaseException:  # noqa: BLE001 - the training code's failure, reported whole
        traceback.print_exc()
        sys.stderr.flush()
        return _fail(EXIT_CODE_ERROR, f"{entry.name} raised; see the traceback above")
    problem = check_metrics(output, metric)
    if problem:
        return _fail(EXIT_CONTRACT, problem)
    print("mlchain-train: done", flush=True)
    return EXIT_OK


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.exit(run())


if __name__ == "__main__":
    main()
