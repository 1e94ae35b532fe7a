"""Defaults for the upstream client and its retry rules, in one place to read and to vary."""

from __future__ import annotations

# Retries. Waits are short because a tier is latency-bound: an ensemble member that needs a long
# pause is better counted as a vote for nothing than waited for.
# 529: Anthropic's "API temporarily overloaded", an endpoint's trouble like a 503.
RETRYABLE_STATUS_CODES = frozenset({429, 500, 502, 503, 504, 529})
INITIAL_RETRY_DELAY_S = 0.1
MAX_RETRY_DELAY_S = 1.0
# Each backoff wait is shortened by up to this fraction, at random, so callers that failed together
# do not come back together.
RETRY_JITTER = 0.25
MAX_RETRY_AFTER_S = 2.0

# The shared HTTP client.
POOL_MAX_CONNECTIONS = 1024
POOL_MAX_KEEPALIVE_CONNECTIONS = 256
# uvicorn (behind vLLM and llama-cpp-python's server) closes idle connections after 5 s; dropping
# ours a little earlier avoids sending a request down a connection the server is closing.
KEEPALIVE_EXPIRY_S = 4.0
CONNECT_TIMEOUT_S = 5.0
# A backstop for any use of the client without a per-call timeout; adapters set their own.
CLIENT_TIMEOUT_S = 60.0

# How much of an upstream error body a call record keeps.
ERROR_BODY_CHARS = 200

# llama.cpp cuts a grammar-constrained label short when max_tokens is too small ("positiv").
GRAMMAR_MIN_MAX_TOKENS = 8
