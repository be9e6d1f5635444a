# nbval never collects the benchmark solutions: they train ACM for minutes and are stored with
# their outputs; `make solutions` re-executes them in place.
collect_ignore_glob = ["benchmarks/*"]
