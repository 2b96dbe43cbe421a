"""Graph nodes, one concern per module. Each is an async function of (state, runtime) that
returns a partial state update; which node runs next is decided by the graph's conditional
edges (`agent/edges.py`) from what the node recorded. Dependencies are bound when the graph is
built."""
