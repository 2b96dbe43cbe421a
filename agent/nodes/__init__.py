"""Graph nodes, one concern per module. Each is an async function of (state, runtime) that
returns a partial state update, or, where the graph branches, a `Command` whose destination a
function of `agent/edges.py` reads from what the node decided. Dependencies are bound when the
graph is built."""
