"""Helpers every kind of test shares (unit, integration, interop, benchmarks): no fixtures, no
peers, so that no test imports another test area's module to reach them."""
