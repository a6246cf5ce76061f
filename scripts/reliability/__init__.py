"""The reliability proof suite of issue 8 (`make reliability`): one module per part (crash,
killnine, fuzz, ssrf, memory, throughput), shared pieces in `common`, the entry point `run.py`."""
