"""Graph nodes, one concern per module. Each is an async function of (state, runtime) that
returns a partial state update or a `Command`; `services` is bound when the graph is built."""
