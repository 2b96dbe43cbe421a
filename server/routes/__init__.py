"""The chat API's endpoints, one router per resource; `server.app` includes them all."""
