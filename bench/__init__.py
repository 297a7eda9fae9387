"""Benchmarks: each module's `main()` prints its figures beside a same-run baseline."""
