"""The agent: the loop (model call, tools, results fed back), its events, and the use cases
over conversations, messages, runs and approvals. No I/O of its own: the model, the tools and
the database come in through ports."""
