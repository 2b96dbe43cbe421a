"""`agentrag eval`: benchmarks of retrieval quality, the agent and fusion settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import RichProgress, cli_settings, console, err, friendly_errors

if TYPE_CHECKING:
    from agent.settings import Settings

app = typer.Typer(
    help="Benchmarks: retrieval quality, ingest throughput, latency.", no_args_is_help=True
)


@contextmanager
def evaluation_settings(keep: bool) -> Iterator[Settings]:
    """Settings over a fresh temporary data dir, removed afterwards (or the configured one, with
    `--keep`), so a benchmark never mixes its corpus into the user's collections."""
    from eval.retrieval import fresh_data_dir, remove_data_dir

    temp_dir = None if keep else fresh_data_dir()
    try:
        yield cli_settings(data_dir=temp_dir)
    finally:
        if temp_dir is not None:
            remove_data_dir(temp_dir)


@app.command("retrieval")
def eval_retrieval(
    dataset: Annotated[Path, typer.Option(help="Dataset folder, e.g. ../shared/data/beir_scifact")],
    split: Annotated[str, typer.Option(help="Split with qrels (BEIR layout).")] = "test",
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    out: Annotated[Path, typer.Option(help="Where the Markdown and JSON reports go.")] = Path(
        "eval/results"
    ),
    keep: Annotated[
        bool, typer.Option(help="Use the configured data dir instead of a fresh temporary one.")
    ] = False,
) -> None:
    """Ingest a corpus into a fresh collection; report dense, sparse and hybrid side by side."""
    from eval.retrieval import run_retrieval_eval, write_report

    with evaluation_settings(keep) as settings, friendly_errors():
        result = run_retrieval_eval(
            dataset,
            settings,
            split=split,
            limit=limit,
            progress=RichProgress("Ingesting corpus"),
            log=lambda line: err.print(f"[dim]{line}[/]"),
        )
    md, js = write_report(result, out)
    console.print(result.to_markdown())
    console.print(f"Reports: {md} and {js}")


@app.command("agent")
def eval_agent(
    dataset: Annotated[
        Path, typer.Option(help="Dataset folder, e.g. ../shared/data/hotpotqa_dev500")
    ],
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    effort: Annotated[
        list[str] | None, typer.Option(help="Effort tiers to run (repeatable; default all three).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where the reports go.")] = Path("eval/results"),
    keep: Annotated[
        bool, typer.Option(help="Use the configured data dir instead of a fresh temporary one.")
    ] = False,
    langfuse_dataset: Annotated[
        str | None,
        typer.Option(
            help="Log the run as Langfuse experiments: the questions become this Langfuse "
            "dataset's items (created or reused), each effort one run over them, scored with "
            "the metrics. Needs LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_BASE_URL."
        ),
    ] = None,
    langfuse_run: Annotated[
        str | None,
        typer.Option(
            help="Name of the Langfuse runs, each followed by its effort "
            "(default: agentrag VERSION EFFORT START-TIME)."
        ),
    ] = None,
) -> None:
    """Naive baseline vs the agent per effort tier: evidence recall, EM/F1, LLM calls, latency.
    With Langfuse configured, each agent turn is a trace; `--langfuse-dataset` makes the run
    Langfuse experiments that compare side by side with other versions' runs."""
    from agent.context import EFFORTS
    from agent.services import Services
    from eval.agent import run_agent_eval, write_agent_report

    with evaluation_settings(keep) as settings, friendly_errors():
        services = Services(settings)
        try:
            result = run_agent_eval(
                dataset,
                settings,
                limit=limit,
                efforts=effort or list(EFFORTS),
                services=services,
                langfuse_dataset=langfuse_dataset,
                langfuse_run=langfuse_run,
                progress=RichProgress("Ingesting corpus"),
                log=lambda line: err.print(f"[dim]{line}[/]"),
            )
        finally:
            services.tracing.shutdown()
            services.close()
    paths = write_agent_report(result, out)
    console.print(result.to_markdown())
    console.print("Reports: " + ", ".join(str(p) for p in paths))


@app.command("fusion-sweep")
def eval_fusion_sweep(
    dataset: Annotated[Path, typer.Option(help="Dataset folder, e.g. ../shared/data/beir_scifact")],
    split: Annotated[str, typer.Option(help="Tuning split; never the one you report.")] = "train",
    out: Annotated[Path, typer.Option(help="Where the Markdown report goes.")] = Path(
        "eval/results"
    ),
) -> None:
    """Grid-search hybrid fusion settings (RRF k, weights, prefetch, DBSF) on a tuning split."""
    from eval.fusion_sweep import run_fusion_sweep, sweep_markdown

    settings = cli_settings()
    with friendly_errors():
        rows = run_fusion_sweep(
            dataset, settings, split=split, log=lambda line: err.print(f"[dim]{line}[/]")
        )
    report = sweep_markdown(rows, dataset.name, split)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fusion-sweep-{dataset.name}-{split}.md"
    path.write_text(report, encoding="utf-8")
    console.print(report)
    console.print(f"Report: {path}")
