"""Benchmark runs as Langfuse experiments: the eval set as a Langfuse dataset, one run per system
over its items, each question's metrics as item scores and the run's means as run scores, so
two agent versions sit side by side in Langfuse's experiment comparison.

The dataset holds one item per question, its id derived from the dataset name and the question
id: a rerun finds its items and leaves them alone (or updates one whose question changed), and
never adds a second. Langfuse item ids are global, hence the dataset name in them.

Linking is the SDK's own (`Langfuse.run_experiment`, v5): each item runs in a trace whose root
is the SDK's `experiment-item-run` span with its `experiment-item-task` span below, and the
experiment attributes it propagates (`langfuse.experiment.*`) land on every span under the
task, from which Langfuse derives the run's items. The caller's task opens the agent's turn
inside the task span (`Tracing.turn(nested=True)`), so a question is one trace: item run, task,
chat turn, graph.

`run_experiment` runs its own event loop (`asyncio.run`; a thread of its own when the caller's
thread already runs one). The agent's graph and services belong to the benchmark's loop (the
embedded store, the web search client), so `run_dataset_experiment` is called from a worker
thread while that loop waits on it, and hands each item's turn back to that loop, in the
item's context.

Nothing of Langfuse is imported until one of these functions runs.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from agent.errors import AgentragError
from eval.datasets import Question

if TYPE_CHECKING:
    from langfuse import Evaluation, Langfuse
    from langfuse.api import DatasetItem
    from langfuse.experiment import ExperimentItem, ExperimentItemResult

__all__ = [
    "ExperimentDataset",
    "ExperimentError",
    "ExperimentRun",
    "dataset_item_id",
    "item_content",
    "prepare_dataset",
    "run_dataset_experiment",
]

R = TypeVar("R")

ACTIVE = "ACTIVE"
EXPECTED_EXTRAS = ("supporting_titles",)
"""Fields of a question line, besides answers and gold documents, that go in the item's
expected output when the dataset has them."""


class ExperimentError(AgentragError):
    """Langfuse refused or failed a dataset call an experiment needs."""


def dataset_item_id(dataset: str, question_id: str) -> str:
    """The same id for the same question of the same Langfuse dataset, on every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(["agentrag-eval", dataset, question_id])))


def item_content(question: Question, source: str, split: str) -> dict[str, Any]:
    """What a question's dataset item holds: the question as input, the gold answers and gold
    documents as expected output, where it came from as metadata."""
    expected: dict[str, Any] = {"answers": list(question.answers)}
    if question.supporting_doc_ids:
        expected["supporting_doc_ids"] = list(question.supporting_doc_ids)
    for key in EXPECTED_EXTRAS:
        if question.extra.get(key):
            expected[key] = question.extra[key]
    return {
        "input": {"question": question.question},
        "expected_output": expected,
        "metadata": {"question_id": question.id, "source": source, "split": split},
    }


@dataclass(frozen=True, slots=True)
class ExperimentDataset:
    """A Langfuse dataset ready to run: the questions in order, each with its item."""

    name: str
    id: str
    url: str | None
    items: list[tuple[Question, DatasetItem]]
    created: bool
    """The dataset did not exist before this run."""
    written: int
    """Items created or changed by this run (0 on a rerun over the same questions)."""


def prepare_dataset(
    client: Langfuse,
    name: str,
    questions: Sequence[Question],
    *,
    source: str,
    split: str,
    ui_url: str | None = None,
) -> ExperimentDataset:
    """Create the dataset `name` if it is missing, and make sure it holds an item per question
    as `item_content` describes it; items of other questions are left as they are.

    `ui_url`: the Langfuse address for people's browsers; the dataset's link is built on it."""
    import httpx
    from langfuse.api import DatasetStatus, NotFoundError
    from langfuse.api.core.api_error import ApiError

    try:
        try:
            found = client.get_dataset(name)
            dataset_id, project_id = found.id, found.project_id
            existing = {item.id: item for item in found.items}
            created = False
        except NotFoundError:
            made = client.create_dataset(
                name=name,
                description=f"agentrag benchmark questions from {source} ({split})",
                metadata={"source": source, "split": split},
            )
            dataset_id, project_id, existing, created = made.id, made.project_id, {}, True
        items: list[tuple[Question, DatasetItem]] = []
        written = 0
        for question in questions:
            item_id = dataset_item_id(name, question.id)
            content = item_content(question, source, split)
            item = existing.get(item_id)
            if item is None or not _holds(item, content):
                item = client.create_dataset_item(
                    dataset_name=name, id=item_id, status=DatasetStatus(ACTIVE), **content
                )
                written += 1
            items.append((question, item))
    except (ApiError, httpx.HTTPError, OSError) as exc:
        reason = f"HTTP {exc.status_code}: {exc.body}" if isinstance(exc, ApiError) else repr(exc)
        raise ExperimentError(
            f"Langfuse dataset {name!r} could not be prepared ({reason}). Check "
            "LANGFUSE_BASE_URL, LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY."
        ) from None
    url = f"{ui_url.rstrip('/')}/project/{project_id}/datasets/{dataset_id}" if ui_url else None
    return ExperimentDataset(name, dataset_id, url, items, created, written)


def _holds(item: DatasetItem, content: Mapping[str, Any]) -> bool:
    return (
        item.status == ACTIVE
        and item.input == content["input"]
        and item.expected_output == content["expected_output"]
        and item.metadata == content["metadata"]
    )


@dataclass(frozen=True, slots=True)
class ExperimentRun:
    """One run of a dataset experiment, as Langfuse names and links it."""

    run_name: str
    experiment_id: str
    url: str | None
    items: int
    """Items that ran to the end; fewer than the dataset's when the SDK dropped one (logged)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_name": self.run_name,
            "experiment_id": self.experiment_id,
            "url": self.url,
            "items": self.items,
        }


def run_dataset_experiment(
    client: Langfuse,
    dataset: ExperimentDataset,
    *,
    name: str,
    run_name: str,
    description: str,
    metadata: Mapping[str, str],
    loop: asyncio.AbstractEventLoop,
    answer: Callable[[Question], Coroutine[Any, Any, R]],
    output: Callable[[R], Any],
    item_scores: Callable[[R], Mapping[str, float | None]],
    run_scores: Callable[[Sequence[R]], Mapping[str, float]],
) -> ExperimentRun:
    """Run every item of `dataset` through `answer` as the experiment run `run_name`, one item
    at a time, and score it. Blocks: call it from a worker thread while `loop` runs.

    `answer(question)` runs on `loop`, in the context of the item's task span (the turn it
    opens nests there); `output` is what Langfuse shows as the item's output, `item_scores` the
    item's scores (None: does not apply), and `run_scores` the run's, over every answer."""
    from langfuse import Evaluation

    by_item = {item.id: question for question, item in dataset.items}
    answers: dict[str, R] = {}
    """By question id, in the order the items ran."""

    async def task(*, item: ExperimentItem, **kwargs: dict[str, Any]) -> Any:
        question = by_item[str(getattr(item, "id", ""))]
        # run_coroutine_threadsafe schedules the turn with call_soon_threadsafe, which copies
        # this context: the turn sees the task span as current, and the experiment attributes.
        result = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(answer(question), loop))
        answers[question.id] = result
        return output(result)

    def question_metrics(
        *,
        input: Any,
        output: Any,
        expected_output: Any,
        metadata: dict[str, Any] | None,
        **kwargs: dict[str, Any],
    ) -> list[Evaluation]:
        result = answers[str((metadata or {}).get("question_id"))]
        return _evaluations(Evaluation, item_scores(result))

    def run_means(
        *, item_results: list[ExperimentItemResult], **kwargs: dict[str, Any]
    ) -> list[Evaluation]:
        return _evaluations(Evaluation, run_scores(list(answers.values())))

    result = client.run_experiment(
        name=name,
        run_name=run_name,
        description=description,
        data=[item for _, item in dataset.items],
        task=task,
        evaluators=[question_metrics],
        run_evaluators=[run_means],
        max_concurrency=1,  # one turn at a time: each is timed alone, as without Langfuse
        metadata=dict(metadata),
    )
    return ExperimentRun(
        run_name=result.run_name,
        experiment_id=result.experiment_id,
        url=result.experiment_url,
        items=len(result.item_results),
    )


def _evaluations(make: type[Evaluation], scores: Mapping[str, float | None]) -> list[Evaluation]:
    return [make(name=name, value=value) for name, value in scores.items() if value is not None]
