"""The OpenAI-compatible gateway: chat types, the LLM ports and the use cases that route to them."""
