"""LangChain tools wrapping retrievers."""
