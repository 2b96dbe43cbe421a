"""The Langfuse recorder, driven by the real Langfuse SDK (v5) exactly as a traced app drives it.

Each test has its own recorder, public key and OpenTelemetry `TracerProvider`: the SDK keeps one
client state per public key for the whole process, and without `tracer_provider=` its first
client installs the global provider that every later client then shares.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from langfuse import Evaluation, Langfuse, LangfuseOtelSpanAttributes
from langfuse.api import NotFoundError
from langfuse.experiment import LocalExperimentItem
from langfuse.model import TextPromptClient
from opentelemetry.sdk.trace import TracerProvider

from eval.langfuse_recorder import LangfuseRecorder

pytestmark = pytest.mark.integration

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
"""A fixed trace id, as a caller that owns its ids (a request id) passes it in `trace_context`."""


@pytest.fixture
def recorder() -> Iterator[LangfuseRecorder]:
    with LangfuseRecorder(public_key=f"pk-lf-{uuid.uuid4().hex}") as rec:
        yield rec


@contextmanager
def sdk_client(
    rec: LangfuseRecorder,
    *,
    public_key: str | None = None,
    secret_key: str | None = None,
    **options: Any,
) -> Iterator[Langfuse]:
    """A real client pointed at `rec`, on a provider of its own, shut down afterwards."""
    provider = TracerProvider(shutdown_on_exit=False)
    client = Langfuse(
        public_key=public_key or rec.public_key,
        secret_key=secret_key or rec.secret_key,
        base_url=rec.base_url,
        tracer_provider=provider,
        **options,
    )
    try:
        yield client
    finally:
        client.shutdown()
        provider.shutdown()


@pytest.fixture
def langfuse(recorder: LangfuseRecorder) -> Iterator[Langfuse]:
    with sdk_client(recorder) as client:
        yield client


def otlp_requests(rec: LangfuseRecorder) -> list[Any]:
    return [r for r in rec.requests if r.path == "/api/public/otel/v1/traces"]


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_a_turn_decodes_into_its_span_tree_with_types_usage_and_prompt(
    recorder: LangfuseRecorder, compression: str
) -> None:
    recorder.add_prompt("answer", "Answer {{question}} from the evidence.", version=3)
    with sdk_client(recorder, otel_compression=compression) as client:
        prompt = client.get_prompt("answer")
        with client.start_as_current_observation(
            name="turn", trace_context={"trace_id": TRACE_ID}, input={"question": "Capital?"}
        ) as turn:
            with client.start_as_current_observation(
                name="retrieve", as_type="retriever", input="Capital?"
            ) as retrieve:
                retrieve.update(output=[{"title": "France", "score": 0.9}])
            with client.start_as_current_observation(
                name="generate",
                as_type="generation",
                model="scripted",
                usage_details={"input": 12, "output": 5},
                prompt=prompt,
                input=[{"role": "user", "content": "Capital?"}],
                metadata={"attempt": 1, "node": "generate"},
            ) as generation:
                generation.update(output="Paris [1].")
            turn.update(output="Paris [1].")
        client.flush()

    exports = otlp_requests(recorder)
    assert exports and all(r.status == 200 for r in exports)
    encodings = {r.headers.get("content-encoding") for r in exports}
    assert encodings == ({"gzip"} if compression == "gzip" else {None})

    assert recorder.trace_ids() == [TRACE_ID]
    root = recorder.root(TRACE_ID)
    assert root.name == "turn" and root.is_root and root.observation_type == "span"
    # a trace_context without a parent id gets a random remote parent that never arrives
    assert root.parent_span_id is not None
    assert root.attributes[LangfuseOtelSpanAttributes.AS_ROOT] is True
    assert root.input == {"question": "Capital?"} and root.output == "Paris [1]."
    assert root.scope == "langfuse-sdk"

    retrieve_span, generate_span = recorder.children(root)
    assert [retrieve_span.name, generate_span.name] == ["retrieve", "generate"]
    assert retrieve_span.observation_type == "retriever"
    assert retrieve_span.output == [{"title": "France", "score": 0.9}]
    assert generate_span.observation_type == "generation"
    assert generate_span.model == "scripted"
    assert generate_span.usage_details == {"input": 12, "output": 5}
    assert (generate_span.prompt_name, generate_span.prompt_version) == ("answer", 3)
    assert generate_span.metadata == {"attempt": 1, "node": "generate"}
    assert generate_span.start_ns <= generate_span.end_ns
    assert recorder.span("generate") == generate_span
    assert [s.name for s in recorder.spans(TRACE_ID)] == ["turn", "retrieve", "generate"]


def test_wrong_keys_are_refused_and_nothing_is_stored(recorder: LangfuseRecorder) -> None:
    other_key = f"pk-lf-{uuid.uuid4().hex}"
    for public_key, secret_key in ((None, "sk-lf-wrong"), (other_key, None)):
        with sdk_client(recorder, public_key=public_key, secret_key=secret_key) as client:
            with client.start_as_current_observation(name="turn") as turn:
                turn.score(name="grounded", value=1.0)
            prompt = client.get_prompt("answer", fallback="Answer.", max_retries=0)
            client.flush()
            assert prompt.is_fallback

    assert recorder.requests and {r.status for r in recorder.requests} == {401}
    assert recorder.spans() == [] and recorder.scores() == []
    assert recorder.prompt_fetches == {}


def test_scores_from_client_and_spans_are_recorded(
    recorder: LangfuseRecorder, langfuse: Langfuse
) -> None:
    with langfuse.start_as_current_observation(name="turn") as turn:
        turn.score(name="grounded", value=0.75, comment="2 of 3 sentences cited")
        turn.score_trace(name="verdict", value="accepted", data_type="CATEGORICAL")
        trace_id, observation_id = turn.trace_id, turn.id
    langfuse.create_score(name="thumbs", value=1, trace_id=trace_id, data_type="BOOLEAN")
    langfuse.flush()

    scores = {s["name"]: s for s in recorder.scores(trace_id)}
    assert set(scores) == {"grounded", "verdict", "thumbs"}
    assert scores["grounded"]["value"] == 0.75
    assert scores["grounded"]["observationId"] == observation_id
    assert scores["grounded"]["comment"] == "2 of 3 sentences cited"
    assert "observationId" not in scores["verdict"]
    assert (scores["verdict"]["value"], scores["verdict"]["dataType"]) == (
        "accepted",
        "CATEGORICAL",
    )
    assert (scores["thumbs"]["value"], scores["thumbs"]["dataType"]) == (1.0, "BOOLEAN")
    batches = [r for r in recorder.requests if r.path == "/api/public/scores"]
    assert batches and all(r.status == 202 and isinstance(r.json(), list) for r in batches)

    # the older single-score call: one object, answered with its id
    reply = httpx.post(
        f"{recorder.base_url}/api/public/scores",
        json={"name": "legacy", "value": 2, "traceId": trace_id},
        auth=(recorder.public_key, recorder.secret_key),
    )
    assert reply.status_code == 200 and reply.json()["id"]
    assert recorder.scores(trace_id)[-1]["name"] == "legacy"


def test_prompts_by_label_and_version_create_and_fallback(
    recorder: LangfuseRecorder, langfuse: Langfuse
) -> None:
    recorder.add_prompt("route", "Route {{question}}.", version=1, config={"temperature": 0})
    recorder.add_prompt("route", "Route {{question}} carefully.", version=2, labels=("staging",))

    production = langfuse.get_prompt("route")
    assert isinstance(production, TextPromptClient) and not production.is_fallback
    assert (production.name, production.version) == ("route", 1)
    assert production.config == {"temperature": 0}
    assert production.compile(question="where?") == "Route where?."
    assert langfuse.get_prompt("route", label="staging").version == 2
    assert langfuse.get_prompt("route", label="latest").version == 2
    assert langfuse.get_prompt("route", version=1).prompt == "Route {{question}}."
    langfuse.get_prompt("route")  # served from the SDK's cache
    assert recorder.prompt_fetches == {"route": 4}

    created = langfuse.create_prompt(name="route", prompt="Route v3.", labels=["production"])
    assert created.version == 3
    assert langfuse.get_prompt("route", cache_ttl_seconds=0).version == 3
    langfuse.update_prompt(name="route", version=1, new_labels=["production"])
    assert langfuse.get_prompt("route", cache_ttl_seconds=0).version == 1

    langfuse.create_prompt(
        name="folder/chat", prompt=[{"role": "system", "content": "Hi"}], type="chat"
    )
    assert langfuse.get_prompt("folder/chat", label="latest", type="chat").prompt == [
        {"type": "message", "role": "system", "content": "Hi"}
    ]

    fallback = langfuse.get_prompt("missing", fallback="Answer.", max_retries=0)
    assert fallback.is_fallback and fallback.prompt == "Answer."
    with pytest.raises(NotFoundError):
        langfuse.get_prompt("missing", max_retries=0)
    assert recorder.prompt_fetches["missing"] == 2


def test_dataset_experiment_links_every_item_to_a_trace_in_its_run(
    recorder: LangfuseRecorder, langfuse: Langfuse
) -> None:
    dataset = langfuse.create_dataset(name="capitals", description="smoke set")
    questions = {
        "q-france": ("France?", "Paris"),
        "q-italy": ("Italy?", "Rome"),
        "q-spain": ("Spain?", "Madrid"),
    }
    for item_id, (question, _) in questions.items():
        langfuse.create_dataset_item(
            dataset_name="capitals", input={"question": question}, expected_output="x", id=item_id
        )
    for item_id, (question, answer) in questions.items():  # upserts by id
        langfuse.create_dataset_item(
            dataset_name="capitals",
            input={"question": question},
            expected_output=answer,
            id=item_id,
        )
    assert [i["id"] for i in recorder.dataset_items("capitals")] == list(questions)

    fetched = langfuse.get_dataset("capitals", fetch_items_page_size=2)
    assert fetched.id == dataset.id and fetched.project_id == recorder.project_id
    assert [(i.id, i.expected_output) for i in fetched.items] == [
        (item_id, answer) for item_id, (_, answer) in questions.items()
    ]
    assert [r.query for r in recorder.requests if r.path == "/api/public/dataset-items"][-2:] == [
        "datasetName=capitals&page=1&limit=2",
        "datasetName=capitals&page=2&limit=2",
    ]

    answers = {question: answer for question, answer in questions.values()}

    def task(*, item: Any, **kwargs: Any) -> str:
        return answers[item.input["question"]]

    def exact(*, output: str, expected_output: str, **kwargs: Any) -> Evaluation:
        return Evaluation(name="exact", value=float(output == expected_output))

    def accuracy(*, item_results: list[Any], **kwargs: Any) -> Evaluation:
        values = [e.value for r in item_results for e in r.evaluations]
        return Evaluation(name="accuracy", value=sum(values) / len(values))

    result = fetched.run_experiment(
        name="capitals-smoke",
        run_name="run-1",
        task=task,
        evaluators=[exact],
        run_evaluators=[accuracy],
    )

    run_items = recorder.run_items("run-1")
    assert sorted(i.item_id for i in run_items) == sorted(questions)
    assert {i.experiment_id for i in run_items} == {result.experiment_id}
    assert {i.dataset_id for i in run_items} == {dataset.id}
    for run_item in run_items:
        assert run_item.trace_id in recorder.trace_ids()
        assert recorder.root(run_item.trace_id).name == "experiment-item-run"
        task_span = recorder.span("experiment-item-task", run_item.trace_id)
        assert run_item.root_observation_id == task_span.span_id
        [score] = recorder.scores(run_item.trace_id)
        assert (score["name"], score["value"], score["observationId"]) == (
            "exact",
            1.0,
            task_span.span_id,
        )
    [run_score] = [s for s in recorder.scores() if s.get("datasetRunId")]
    assert (run_score["name"], run_score["value"]) == ("accuracy", 1.0)
    assert run_score["datasetRunId"] == result.experiment_id
    assert result.experiment_url is not None
    assert f"/project/{recorder.project_id}/experiments/" in result.experiment_url


def test_local_data_experiment_runs_without_a_dataset(
    recorder: LangfuseRecorder, langfuse: Langfuse
) -> None:
    result = langfuse.run_experiment(
        name="local",
        run_name="local-1",
        data=[LocalExperimentItem(input="a"), LocalExperimentItem(input="b")],
        task=lambda *, item, **kwargs: item["input"].upper(),
    )
    run_items = recorder.run_items("local-1")
    assert len(run_items) == 2 and {i.dataset_id for i in run_items} == {None}
    assert {i.trace_id for i in run_items} == {r.trace_id for r in result.item_results}


def test_project_health_trace_url_and_environment(
    recorder: LangfuseRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in recorder.env().items():
        monkeypatch.setenv(name, value)
    provider = TracerProvider(shutdown_on_exit=False)
    client = Langfuse(tracer_provider=provider)
    try:
        assert client.auth_check()
        assert client.api.health.health().status == "OK"
        assert client.get_trace_url(trace_id=TRACE_ID) == (
            f"{recorder.base_url}/project/{recorder.project_id}/traces/{TRACE_ID}"
        )
    finally:
        client.shutdown()
        provider.shutdown()
    unauthenticated = httpx.get(f"{recorder.base_url}/api/public/health")
    assert unauthenticated.status_code == 401 and unauthenticated.json()["message"]


def test_all_sent_text_shows_payloads_but_not_the_authorization_header(
    recorder: LangfuseRecorder, langfuse: Langfuse
) -> None:
    with langfuse.start_as_current_observation(name="turn", input="token=tok-123") as turn:
        turn.score(name="note", value="said tok-456", data_type="TEXT")
    langfuse.flush()

    sent = recorder.all_sent_text()
    assert "tok-123" in sent and "tok-456" in sent and "turn" in sent
    assert recorder.public_key in sent  # the x-langfuse-public-key header
    assert recorder.secret_key not in sent
    assert all(r.headers["authorization"].startswith("Basic ") for r in recorder.requests)


def test_error_mode_never_raises_in_the_caller_and_recovers(
    recorder: LangfuseRecorder, langfuse: Langfuse
) -> None:
    recorder.mode = "error"
    with langfuse.start_as_current_observation(name="lost"):
        pass
    langfuse.flush()
    assert langfuse.get_prompt("route", fallback="Route.", max_retries=0).is_fallback
    assert recorder.requests and {r.status for r in recorder.requests} == {500}
    assert recorder.spans() == []

    recorder.mode = "ok"
    with langfuse.start_as_current_observation(name="kept"):
        pass
    langfuse.flush()
    assert [s.name for s in recorder.spans()] == ["kept"]


def test_hang_mode_holds_replies_until_the_mode_changes(
    recorder: LangfuseRecorder, langfuse: Langfuse
) -> None:
    recorder.mode = "hang"
    with langfuse.start_as_current_observation(name="held"):
        pass  # ending a span never waits for the server
    flusher = threading.Thread(target=langfuse.flush)
    flusher.start()
    assert recorder.wait_for(lambda rec: rec.held_requests == 1)
    assert recorder.spans() == []

    recorder.mode = "ok"
    flusher.join()
    assert recorder.held_requests == 0
    assert [s.name for s in recorder.spans()] == ["held"]


def test_close_releases_held_requests_promptly(recorder: LangfuseRecorder) -> None:
    """The SDK's own timeout is a minute here, so only the release can end the flush."""
    errors: list[BaseException] = []

    with sdk_client(recorder, timeout=60) as client:
        recorder.mode = "hang"
        with client.start_as_current_observation(name="held"):
            pass

        def flush() -> None:
            try:
                client.flush()
            except BaseException as error:  # the assertion below reports it
                errors.append(error)

        flusher = threading.Thread(target=flush, daemon=True)
        flusher.start()
        assert recorder.wait_for(lambda rec: rec.held_requests == 1)

        closer = threading.Thread(target=recorder.close, daemon=True)
        closer.start()
        closer.join(timeout=10)
        flusher.join(timeout=10)
        assert not closer.is_alive() and not flusher.is_alive() and errors == []
    assert [r.status for r in otlp_requests(recorder)] == [500]
    assert recorder.spans() == []


def test_wait_for_returns_false_when_nothing_arrives(recorder: LangfuseRecorder) -> None:
    assert not recorder.wait_for(lambda rec: bool(rec.requests), timeout=0.01)
    with pytest.raises(LookupError):
        recorder.root(TRACE_ID)


def test_dataset_item_listing_pages_and_unknown_names(recorder: LangfuseRecorder) -> None:
    auth = (recorder.public_key, recorder.secret_key)
    api = f"{recorder.base_url}/api/public"
    assert httpx.get(f"{api}/v2/datasets/none", auth=auth).status_code == 404
    assert (
        httpx.post(f"{api}/dataset-items", json={"datasetName": "none"}, auth=auth).status_code
        == 404
    )
    httpx.post(f"{api}/v2/datasets", json={"name": "d"}, auth=auth).raise_for_status()
    for n in range(3):
        httpx.post(
            f"{api}/dataset-items", json={"datasetName": "d", "id": f"i{n}"}, auth=auth
        ).raise_for_status()
    page = httpx.get(
        f"{api}/dataset-items", params={"datasetName": "d", "page": 2, "limit": 2}, auth=auth
    ).json()
    assert [i["id"] for i in page["data"]] == ["i2"]
    assert page["meta"] == {"page": 2, "limit": 2, "totalItems": 3, "totalPages": 2}
