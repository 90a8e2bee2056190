"""The decoder-LLM side of the lab: chat backdoors (attacks), their metrics and evaluation."""
