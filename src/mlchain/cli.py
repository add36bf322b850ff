"""The command line: one click group, one subcommand per job. Thin: parse, call, print.

Errors are MlchainError subclasses (each with its exit code), which know nothing of
click: :class:`MlchainGroup` maps them to a click exception with the same message and
exit code, and :func:`main` prints it once, without a traceback, and exits with that code. Heavy modules (mlflow,
docker, optuna, tensorflow) are imported inside the commands that need them, so that
`mlchain --help` and the small jobs do not load them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlchain import __version__, searchplan
from mlchain.contract import FRAMEWORKS
from mlchain.errors import MlchainError

if TYPE_CHECKING:
    from mlchain.config import Settings


class Context:
    """Settings are resolved once, on first use, from the group's flags."""

    def __init__(self, flags: dict[str, Any]) -> None:
        self.flags = flags
        self._settings: Settings | None = None

    def settings(self, **more: Any) -> Settings:
        if self._settings is None or more:
            from mlchain.config import load_settings

            self._settings = load_settings({**self.flags, **more})
        return self._settings


pass_ctx = click.make_pass_decorator(Context)


class CommandFailed(click.ClickException):
    """An MlchainError as click shows it: its message (with its fix) and its exit code."""

    def __init__(self, error: MlchainError) -> None:
        super().__init__(error.format_message())
        self.error = error

    @property  # click's is a class variable; this error's is its own
    def exit_code(self) -> int:  # type: ignore[override]
        return self.error.exit_code


class MlchainGroup(click.Group):
    """The one place where an MlchainError becomes click's: whoever calls the group (``main``,
    click's own standalone mode, a test's CliRunner) sees the error's message and exit code."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:  # the group's own options
            return super().make_context(info_name, args, parent, **extra)
        except MlchainError as exc:
            raise CommandFailed(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:  # the subcommand's options and body
            return super().invoke(ctx)
        except MlchainError as exc:
            raise CommandFailed(exc) from exc


@click.group(cls=MlchainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlchain")
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="State folder (MLCHAIN_HOME; default ./.mlchain).")
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """mlchain: push training code, get a trained, gated, tracked and announced model."""
    ctx.obj = Context({"home": home})


# --- classify / train ------------------------------------------------------------

@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with an error field on failure).")
def classify(path: Path, as_json: bool) -> None:
    """Decide whether PATH is a keras or an sklearn training repository, and why."""
    try:
        if not path.is_dir():
            raise click.BadParameter(f"{path} is not a folder", param_hint="'PATH'")
        from mlchain.detect import classify_repo

        result = classify_repo(path)
    except (click.ClickException, MlchainError) as exc:
        if not as_json:
            raise
        # The one JSON object of this outcome; the exit code is the error's all the same.
        click.echo(json.dumps({"error": {"message": _message(exc), "exit_code": exc.exit_code}}, indent=2))
        sys.exit(exc.exit_code)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.explain())


RUNNER_CHOICE = click.Choice(["auto", "docker", "process"])


@cli.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--params", "params_json", default=None, help="JSON object merged over mlchain.yaml's params.")
@click.option("--runner", type=RUNNER_CHOICE, default=None, help="Where training runs (default: auto).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@pass_ctx
def train(ctx: Context, path: Path, params_json: str | None, runner: str | None, as_json: bool) -> None:
    """Classify PATH, run one trial and log it to MLflow."""
    from mlchain.trainer import parse_params_option, train_once

    settings = ctx.settings(runner=runner)
    result = train_once(settings, path, parse_params_option(params_json), echo=None if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.explain(settings))


# --- the chain -------------------------------------------------------------------

@cli.command()
@click.argument("repo")
@click.option("--ref", default=None, help="Branch, tag or commit (default: the repository's HEAD).")
@click.option("--runner", type=RUNNER_CHOICE, default=None, help="Where training runs (default: auto).")
@click.option("--threshold", type=float, default=None, help="Gate threshold (default: mlchain.yaml, else 0.80).")
@click.option("--max-trials", type=int, default=None, help="Trial budget (default: mlchain.yaml, else 6).")
@click.option("--max-minutes", type=float, default=None, help="Time budget in minutes.")
@click.option("--patience", type=int, default=None, help="Stop after this many trials without improvement.")
@click.option("--sampler", type=click.Choice(searchplan.SAMPLERS), default=None,
              help="The search's sampler (default: mlchain.yaml's search.sampler, else tpe).")
@click.option("--pruner", type=click.Choice(searchplan.PRUNERS), default=None,
              help="Stop weak trials early (default: mlchain.yaml's search.pruner, else halving; none for random).")
@click.option("--pusher-email", default=None, help="Who pushed; the email goes there when mlchain.yaml names nobody.")
@click.option("--run-id", default=None, hidden=True, help="Id for the new run (the webhook service sets it).")
@click.option("--branch", default=None, hidden=True,
              help="Branch (or tag) the commit --ref came from (the webhook service sets it).")
@click.option("--reason", default=None, hidden=True,
              help="Why this run runs when no push asked for it (the drift observer sets it).")
@click.option("--dataset", type=click.Path(path_type=Path), default=None, hidden=True,
              help="A dataset version under MLCHAIN_HOME/datasets to train on instead of the repository's data.")
@click.option("--no-resume", is_flag=True, help="Do not first finish runs whose engine was interrupted.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@pass_ctx
def run(ctx: Context, repo: str, ref: str | None, runner: str | None, threshold: float | None,
        max_trials: int | None, max_minutes: float | None, patience: int | None, sampler: str | None,
        pruner: str | None, pusher_email: str | None, run_id: str | None, branch: str | None,
        reason: str | None, dataset: Path | None, no_resume: bool, as_json: bool) -> None:
    """Run the whole chain on REPO (a path or a git URL): pull, classify, train, gate, notify."""
    from mlchain.engine.chain import interrupted_runs, resume_chain, run_chain
    from mlchain.gitrefs import require_ref
    from mlchain.state import StateStore

    settings = ctx.settings(runner=runner, threshold=threshold, max_trials=max_trials,
                            max_minutes=max_minutes, patience=patience, sampler=sampler, pruner=pruner)
    if ref is not None:
        require_ref(ref)  # refused before anything runs, resumed runs included
    if not no_resume and settings.state_db.exists():
        for stale in interrupted_runs(StateStore(settings.state_db)):
            if stale != run_id:
                click.echo(f"resuming run {stale}, interrupted earlier (skip with --no-resume)", err=True)
                resume_chain(settings, stale, live=not as_json)
    summary = run_chain(settings, repo, ref=ref, pusher_email=pusher_email, live=not as_json, run_id=run_id,
                        branch=branch, reason=reason, dataset=dataset)
    _print_summary(summary, as_json, settings)


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@pass_ctx
def resume(ctx: Context, run_id: str, as_json: bool) -> None:
    """Resume a chain run whose engine stopped, from its last finished job."""
    from mlchain.engine.chain import resume_chain

    settings = ctx.settings()
    summary = resume_chain(settings, run_id, live=not as_json)
    _print_summary(summary, as_json, settings)


def _print_summary(summary: Any, as_json: bool, settings: Settings) -> None:
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        click.echo(summary.explain(settings))
    sys.exit(summary.exit_code)  # 0 passed, 15 gate not reached, else what stopped the run


# --- the jobs (each Jenkins shell step calls one of these) --------------------------

@cli.group()
def job() -> None:
    """The six jobs of the chain, as Jenkins' shell steps call them (environment in, properties out)."""


def _job_command(name: str, help_text: str) -> None:
    @job.command(name=name, help=help_text)
    @pass_ctx
    def _cmd(ctx: Context) -> None:
        from mlchain.engine import jobs

        code = jobs.JOBS[name](ctx.settings(), jobs.BuildEnv.from_environ(), click.echo)
        sys.exit(code)


_job_command("pull", "job1: record the checked-out commit and open a chain run.")
_job_command("classify", "job2: classify the code and launch the trial's training.")
_job_command("train", "job3: wait for training, collect metrics, log to MLflow.")
_job_command("gate", "job4: gate on the metric; exit 75 (unstable) asks for another trial.")
_job_command("notify", "job5: email the result and register the best model.")


@job.command(name="monitor")
@click.option("--watch", is_flag=True, help="Keep watching instead of one pass.")
@click.option("--interval", type=float, default=None, help="Seconds between passes with --watch.")
@pass_ctx
def job_monitor(ctx: Context, watch: bool, interval: float | None) -> None:
    """job6: restart training that died for a transient reason, from its last checkpoint."""
    from mlchain.monitor import run_monitor

    settings = ctx.settings(monitor_interval_s=interval)
    for line in run_monitor(settings, watch=watch):
        click.echo(line)


# --- images, service, jenkins ------------------------------------------------------

@cli.group()
def images() -> None:
    """The framework images training runs in."""


@images.command(name="build")
@click.option("--framework", "frameworks", type=click.Choice(FRAMEWORKS), multiple=True,
              help="Build only this framework's image (repeatable; default: all).")
@pass_ctx
def images_build(ctx: Context, frameworks: tuple[str, ...]) -> None:
    """Build (or find in cache) the image of each framework."""
    from mlchain.images import build_images

    for ref in build_images(ctx.settings(), list(frameworks) or None, echo=click.echo):
        click.echo(f"{ref.framework}: {ref.tag} ({ref.image_id[:19]}){' cached' if ref.cached else ''}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="Chain runs at once.")
@click.option("--insecure-no-secret", is_flag=True,
              help="Accept unsigned deliveries (no MLCHAIN_WEBHOOK_SECRET). Never on a reachable host.")
@pass_ctx
def serve(ctx: Context, host: str, port: int, workers: int, insecure_no_secret: bool) -> None:
    """Receive GitHub pushes, queue them durably and run the chain; serve the dashboard."""
    from mlchain.webhook.server import serve as serve_app

    serve_app(ctx.settings(), host=host, port=port, workers=workers, insecure=insecure_no_secret)


@cli.group()
def drift() -> None:
    """What the serving endpoint's drift observer saw: detections and retraining requests."""


@drift.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="The newest this many detections and requests.")
@pass_ctx
def drift_status(ctx: Context, as_json: bool, limit: int) -> None:
    """List the drift detections and the retraining runs they asked for (the feedback store)."""
    from mlchain.serving.status import drift_report

    report = drift_report(ctx.settings(), limit)
    lines = report.pop("lines")
    click.echo(json.dumps(report, indent=2) if as_json else "\n".join(lines))


@cli.group()
def model() -> None:
    """Serve a registered model."""


@model.command(name="serve")
@click.argument("name")
@click.option("--alias", default=None, help="Serve the version this alias names, following it (default: champion).")
@click.option("--version", "version", default=None, help="Serve this fixed version instead of an alias.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(min=0, max=65535), default=5001, show_default=True)
@click.option("--poll-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds between registry checks for a moved alias (MLCHAIN_SERVE_POLL_S; default 5).")
@click.option("--max-batch-rows", type=click.IntRange(min=1), default=None, help="Rows per predict call at most (default 256).")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=None,
              help="How long a batch may wait for more requests under load (default 2).")
@click.option("--wait", "wait_for_model", is_flag=True,
              help="Start even if the model does not exist yet: answer 503 until it does.")
@pass_ctx
def model_serve(ctx: Context, name: str, alias: str | None, version: str | None, host: str, port: int,
                poll_s: float | None, max_batch_rows: int | None, max_wait_ms: float | None,
                wait_for_model: bool) -> None:
    """Serve NAME's champion (MLflow's scoring protocol on /invocations), following the alias."""
    from mlchain.serving.server import serve as serve_model
    from mlchain.serving.server import target_of

    settings = ctx.settings(serve_poll_s=poll_s, serve_max_batch_rows=max_batch_rows,
                            serve_max_wait_ms=max_wait_ms)
    serve_model(settings, target_of(name, alias, version), host=host, port=port, wait=wait_for_model)


@cli.group()
def jenkins() -> None:
    """Render and deploy jobs/ to a Jenkins controller."""


@jenkins.command(name="render")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Folder for the XML (default: print a listing).")
@click.option("--format", "fmt", type=click.Choice(["xml", "job-dsl"]), default="xml", show_default=True)
@click.option("--jobs-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
def jenkins_render(output: Path | None, fmt: str, jobs_dir: Path | None) -> None:
    """Render jobs/ into config.xml files (JJB) or a Job DSL seed script."""
    from mlchain import jenkins as jk

    for line in jk.render(output, fmt=fmt, jobs_dir=jobs_dir):
        click.echo(line)


@jenkins.command(name="deploy")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option("--delete-old", is_flag=True, help="Delete managed jobs that jobs/ no longer defines.")
@click.option("--jobs-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@pass_ctx
def jenkins_deploy(ctx: Context, dry_run: bool, delete_old: bool, jobs_dir: Path | None) -> None:
    """Create or update the jobs and the view on the controller (only what changed)."""
    from mlchain import jenkins as jk

    for line in jk.deploy(ctx.settings(), dry_run=dry_run, delete_old=delete_old, jobs_dir=jobs_dir):
        click.echo(line)


@jenkins.command(name="status")
@pass_ctx
def jenkins_status(ctx: Context) -> None:
    """Show the last builds of the chain's jobs."""
    from mlchain import jenkins as jk

    for line in jk.status(ctx.settings()):
        click.echo(line)


@jenkins.command(name="trigger")
@click.argument("repo_url")
@click.argument("ref")
@pass_ctx
def jenkins_trigger(ctx: Context, repo_url: str, ref: str) -> None:
    """Start job1-pull on the controller for REPO_URL at REF."""
    from mlchain import jenkins as jk
    from mlchain.gitrefs import require_clone_url, require_ref

    settings = ctx.settings()
    require_clone_url(repo_url, settings.clone_schemes, source="REPO_URL")  # Jenkins clones it: no file://
    click.echo(jk.trigger(settings, repo_url, require_ref(ref, source="REF")))


def _message(exc: click.ClickException | MlchainError) -> str:
    """An error's message as the user reads it (with its fix, for an MlchainError)."""
    return exc.format_message()


def main(argv: list[str] | None = None) -> int:
    """``mlchain ARGV`` as this process's entry point: the command's exit code. An error is
    printed here, once, without a traceback, and ends the process with its own exit code."""
    try:
        code = cli.main(args=sys.argv[1:] if argv is None else argv, prog_name="mlchain", standalone_mode=False)
    except MlchainError as exc:  # raised outside a command (MlchainGroup maps those inside)
        click.echo(f"Error: {_message(exc)}", err=True)
        return exc.exit_code
    except click.ClickException as exc:  # usage errors and every MlchainError of a command
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:  # Ctrl-C, or end of input at a prompt
        click.echo("Aborted!", err=True)
        return 1
    except ModuleNotFoundError as exc:  # an optional dependency: say which extra installs it
        from mlchain.extras import missing_extra

        args = sys.argv[1:] if argv is None else argv
        error = missing_extra(exc, next((arg for arg in args if arg in cli.commands), "mlchain"))
        if error is None:
            raise
        click.echo(f"Error: {_message(error)}", err=True)
        return error.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code if isinstance(code, int) else 0  # an int: --help, --version or ctx.exit(code)


if __name__ == "__main__":
    sys.exit(main())
