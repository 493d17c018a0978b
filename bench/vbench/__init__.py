"""varsel benchmark suite (issue #7): see bench/README.md and docs/performance.md."""
