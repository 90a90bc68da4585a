"""Venues reached through ccxt (https://github.com/ccxt/ccxt): one library, many exchanges."""
