"""Thin trigger handlers: parse the input, call one function of ``shared``, map the result."""
