"""superpoint_ros benchmark suite (issue 7): ``python -m bench.run``. See docs/benchmarks.md."""
