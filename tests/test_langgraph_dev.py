"""`langgraph dev` serves the agent of `langgraph.json` offline, with the bundled SmolLM2.

Runs the real CLI (in-memory runtime, no browser, no reload, no analytics or version checks)
in a subprocess and talks to it through `langgraph_sdk`, as LangGraph Studio does. The server
keeps langgraph dev's defaults otherwise, blocking-call detection included: a node that blocks
the event loop fails its run here, as it would for a developer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.schema import StreamPart

from agent.ports import free_port
from agent.settings import load_settings
from agent.tracing import TURN_NAME
from eval.langfuse_recorder import LangfuseRecorder
from retrievers.embeddings import LocalEmbeddings
from retrievers.stack import RetrievalStack
from tests.conftest import REPO, SAMPLES

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="finds the server's children in /proc"),
]

GRAPH_ID = "agentrag"
QUESTION = "Which planet has the hottest surface?"
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
LANGGRAPH = Path(sys.executable).with_name("langgraph")

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # The CLI posts every command to its analytics endpoint unless told not to.
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    # langgraph-api asks PyPI for a newer release at start.
    "LANGGRAPH_NO_VERSION_CHECK": "1",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "PYTHONUNBUFFERED": "1",
}
REMOVED_ENV = (
    # Any of these makes langgraph-api trace to LangSmith or submit usage metadata.
    "LANGSMITH_API_KEY",
    "LANGCHAIN_API_KEY",
    "LANGSMITH_CONTROL_PLANE_API_KEY",
    "LANGGRAPH_CLOUD_LICENSE_KEY",
)
CITATION_MARK = re.compile(r"\s*\[\d+\]")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    cmdline: str


@dataclass
class DevServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    seen: dict[int, str] = field(default_factory=dict)
    """Children ever listed, so that teardown can find one that outlived the server."""

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace")
        plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
        return "\n".join(deque(plain.splitlines(), maxlen=lines))

    def descendants(self) -> list[ProcessInfo]:
        found = descendants_of(self.process.pid) if self.process.poll() is None else []
        self.seen.update((p.pid, p.cmdline) for p in found)
        return found

    def failure(self, what: str) -> str:
        return f"{what}\n--- langgraph dev output (last lines) ---\n{self.log_tail()}"


def cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None


def descendants_of(root: int) -> list[ProcessInfo]:
    """Every live process under `root`, read from /proc (no psutil here)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[ProcessInfo] = []
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        command = cmdline(pid)
        if command is None:
            continue
        found.append(ProcessInfo(pid, command))
        pending.extend(children.get(pid, []))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: Iterable[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    left = [pid for pid in pids if alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [pid for pid in left if alive(pid)]
    return left


def write_config(workdir: Path) -> Path:
    """The repository's langgraph.json with its paths made absolute.

    `langgraph dev` resolves paths against its working directory and writes the in-memory
    runtime's threads to `.langgraph_api/` there; a temporary working directory keeps the
    checkout clean while serving exactly what the repository declares.
    """
    config: dict[str, Any] = json.loads((REPO / "langgraph.json").read_text())
    config["dependencies"] = [str((REPO / dep).resolve()) for dep in config["dependencies"]]
    graphs: dict[str, str] = {}
    for graph_id, spec in config["graphs"].items():
        graphs[graph_id] = absolute(spec)
    config["graphs"] = graphs
    if "http" in config:
        config["http"]["app"] = absolute(config["http"]["app"])
    if isinstance(config.get("env"), str):
        config["env"] = str((REPO / config["env"]).resolve())
    target = workdir / "langgraph.json"
    target.write_text(json.dumps(config, indent=2))
    return target


def absolute(spec: str) -> str:
    """`path/to/file.py:name` made absolute; `package.module:name` stays (found on PYTHONPATH)."""
    target, _, variable = spec.rpartition(":")
    if "/" not in target:
        return spec
    return f"{(REPO / target).resolve()}:{variable}"


def server_env(data_dir: Path, langfuse: LangfuseRecorder) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in REMOVED_ENV}
    env.update(OFFLINE_ENV)
    env.update(langfuse.env())
    env["AGENTRAG_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def wait_until_ready(server: DevServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(trust_env=False, timeout=2.0) as http:
        while time.monotonic() < deadline:
            code = server.process.poll()
            if code is not None:
                pytest.fail(server.failure(f"langgraph dev exited with status {code}"))
            try:
                if http.get(f"{server.url}/ok").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
    pytest.fail(server.failure(f"langgraph dev did not answer on {server.url}/ok in {timeout_s}s"))


def stop_everything(server: DevServer) -> None:
    """Stop the server's process group, then any child of it that left the group."""
    server.descendants()
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=STOP_TIMEOUT_S)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
    for pid, command in server.seen.items():
        if alive(pid) and cmdline(pid) == command:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def dev_server(
    tmp_path: Path, minilm: LocalEmbeddings, langfuse: LangfuseRecorder
) -> Iterator[DevServer]:
    if not LANGGRAPH.is_file():
        pytest.skip(f"{LANGGRAPH} not found: pip install 'langgraph-cli[inmem]'")
    data_dir = tmp_path / "data"
    stack = RetrievalStack(load_settings(data_dir=data_dir), embeddings=minilm)
    try:
        stack.ingestor.ingest_paths(
            [SAMPLES / "astronomy"], "astronomy", description="Astronomy: planets, stars, the Sun"
        )
    finally:
        stack.close()  # the embedded store serves one process: the server's

    workdir = tmp_path / "server"
    workdir.mkdir()
    port = free_port()
    log_path = tmp_path / "langgraph-dev.log"
    command = [
        str(LANGGRAPH),
        "dev",
        "--config",
        str(write_config(workdir)),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--no-browser",
        "--no-reload",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=server_env(data_dir, langfuse),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DevServer(process, f"http://{LOOPBACK}:{port}", log_path)
    try:
        wait_until_ready(server, STARTUP_TIMEOUT_S)
        yield server
    finally:
        stop_everything(server)


async def stream_turn(
    client: LangGraphClient, thread_id: str, server: DevServer, **context: Any
) -> list[StreamPart]:
    parts: list[StreamPart] = []
    turn: dict[str, Any] = {"messages": [{"role": "user", "content": QUESTION}]}
    async for part in client.runs.stream(
        thread_id,
        GRAPH_ID,
        input=turn,
        context={"effort": "low", **context},
        stream_mode=["messages", "updates"],
    ):
        assert isinstance(part, StreamPart)
        parts.append(part)
    errors = [part.data for part in parts if part.event == "error"]
    assert not errors, server.failure(f"the run failed: {errors}")
    return parts


async def thread_values(client: LangGraphClient, thread_id: str) -> dict[str, Any]:
    values = (await client.threads.get_state(thread_id))["values"]
    assert isinstance(values, dict)
    return values


def streamed_messages(parts: list[StreamPart], node: str) -> list[str]:
    """Final text of each chat message streamed token by token from `node`, in order."""
    from_node: set[str] = set()
    texts: dict[str, str] = {}
    for part in parts:
        if part.event == "messages/metadata":
            for message_id, info in part.data.items():
                if info["metadata"].get("langgraph_node") == node:
                    from_node.add(message_id)
        elif part.event == "messages/partial":
            for message in part.data:
                if message["id"] in from_node and isinstance(message["content"], str):
                    texts[message["id"]] = message["content"]
    return list(texts.values())


def without_citations(text: str) -> str:
    return " ".join(CITATION_MARK.sub("", text).split())


async def test_langgraph_dev_serves_the_agent(
    dev_server: DevServer, langfuse: LangfuseRecorder
) -> None:
    client = get_client(url=dev_server.url)

    assistants = await client.assistants.search(graph_id=GRAPH_ID)
    assert assistants, dev_server.failure(f"no assistant for graph {GRAPH_ID!r}")
    schemas = await client.assistants.get_schemas(assistants[0]["assistant_id"])
    fields = (schemas.get("context_schema") or {}).get("properties", {})
    assert fields["effort"]["enum"] == ["low", "medium", "high"]
    assert fields["effort"]["description"]
    undocumented = sorted(name for name, field in fields.items() if not field.get("description"))
    assert not undocumented, f"context fields Studio shows without a description: {undocumented}"

    # Studio draws what this endpoint returns: the corrective loop and the regeneration included.
    drawn = await client.assistants.get_graph(assistants[0]["assistant_id"], xray=1)
    edges = {(e["source"], e["target"]) for e in drawn["edges"]}
    for edge in (
        ("research:grade_evidence", "research:rewrite_query"),
        ("research:rewrite_query", "research:retrieve_chunks"),
        ("research:finish_research", "collect_evidence"),
        ("reflect_answer", "generate_answer"),
        ("route_query", "decompose_query"),
    ):
        assert edge in edges, f"Studio does not draw {edge}: {sorted(edges)}"

    thread = await client.threads.create()
    parts = await stream_turn(client, thread["thread_id"], dev_server)

    nodes = [node for part in parts if part.event == "updates" for node in part.data]
    for node in ("route_query", "generate_answer", "reflect_answer"):
        assert node in nodes, f"no update from {node}: {nodes}"
    streamed = streamed_messages(parts, "generate_answer")
    assert streamed and streamed[-1].strip(), "generate_answer streamed no tokens"
    assert sum(part.event == "messages/partial" for part in parts) > 3, "not token by token"

    values = await thread_values(client, thread["thread_id"])
    evidence_ids = {chunk["id"] for chunk in values["evidence"]}
    sources = {chunk["source"] for chunk in values["evidence"]}
    assert any(source.endswith("solar-system.md") for source in sources), sources
    assert values["citations"], f"no citation in {values['answer']!r}"
    assert {c["id"] for c in values["citations"]} <= evidence_ids
    if not values["verdict"].get("revised"):
        assert without_citations(values["answer"]) == without_citations(streamed[-1])
    else:  # reflection removed or marked what the streamed answer got wrong, and says so
        assert {f["flag"] for f in values["flags"]} & {"claims_removed", "unverified", "partial"}
    assert values["messages"][-1]["type"] == "ai"
    assert values["messages"][-1]["content"] == values["answer"]

    # A second run on the same server must reuse the open store: the graph factory runs per run.
    # No LLM call this time (an extractive answer), which keeps the test short.
    again = await client.threads.create()
    await stream_turn(client, again["thread_id"], dev_server, max_llm_calls=0)
    second = await thread_values(client, again["thread_id"])
    assert second["citations"], dev_server.failure("the second run found nothing to cite")

    # The chat API is mounted in the same server (langgraph.json `http.app`) and shares its store.
    async with httpx.AsyncClient(base_url=dev_server.url, timeout=120, trust_env=False) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        names = [c["name"] for c in (await http.get("/v1/collections")).json()["collections"]]
        assert names == ["astronomy"]
        reply = await http.post(
            "/v1/chat", json={"message": QUESTION, "effort": "low", "stream": False}
        )
        assert reply.status_code == 200, dev_server.failure(reply.text)
        done = reply.json()
        assert done["type"] == "done" and done["answer"].strip()
        assert any(c["source"].endswith("solar-system.md") for c in done["citations"])
        threads = (await http.get("/v1/threads")).json()["threads"]
        assert [t["thread_id"] for t in threads] == [done["thread_id"]]
        assert (await http.get("/ok")).status_code == 200  # LangGraph's own API still answers

    # With Langfuse set up, each run Studio starts is a trace of its own, the graph at its root,
    # scored; the chat API's turn is one too, under its `chat turn`.
    studio_threads = {thread["thread_id"], again["thread_id"]}
    assert langfuse.wait_for(
        lambda r: (
            len(r.trace_ids()) == 3
            and any(s.name == TURN_NAME for s in r.spans())  # a root ends, and is sent, last
            and sum(s.name == GRAPH_ID and s.is_root for s in r.spans()) == 2
            and {s["name"] for s in r.scores()} >= {"grounded", "llm_calls"}
        )
    ), dev_server.failure(f"traces: {langfuse.trace_ids()}")
    roots = {langfuse.root(t).name: langfuse.root(t) for t in langfuse.trace_ids()}
    assert roots[TURN_NAME].attributes["session.id"] == done["thread_id"]
    studio = [langfuse.root(t) for t in langfuse.trace_ids() if langfuse.root(t).name == GRAPH_ID]
    assert {r.attributes["session.id"] for r in studio} == studio_threads
    for root in studio:
        nodes = [s.name for s in langfuse.children(root)]
        assert "generate_answer" in nodes and "reflect_answer" in nodes, nodes
        scores = {s["name"] for s in langfuse.scores(root.trace_id)}
        assert {"grounded", "llm_calls", "evidence_chunks"} <= scores, scores

    llama = [p for p in dev_server.descendants() if "llama_cpp.server" in p.cmdline]
    assert llama, "agentrag did not serve the bundled model from inside langgraph dev"
    dev_server.process.send_signal(signal.SIGTERM)
    try:
        dev_server.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(dev_server.failure("langgraph dev ignored SIGTERM"))
    orphans = wait_gone((p.pid for p in llama), timeout_s=10.0)
    assert not orphans, f"llama_cpp.server outlived langgraph dev: pids {orphans}"
