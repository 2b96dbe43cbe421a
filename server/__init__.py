"""The chat API and its web page: FastAPI app factory, routers, stream events, run management."""
