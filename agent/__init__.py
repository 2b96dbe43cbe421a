"""The agent: graph state, runtime configuration, LLM access, budgets and nodes.

`agent.settings` and `agent.errors` are the two modules every other package may import.
"""
