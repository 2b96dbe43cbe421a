"""The `agentrag` command line: thin commands over the retrievers, the agent, the chat server and
the benchmarks. It is the top layer: it may import every package, and none imports it.

Commands import the heavy layers (models, the vector store, the server) when they run, not when
the command line starts, so that `agentrag --help` and argument errors answer at once.
"""
