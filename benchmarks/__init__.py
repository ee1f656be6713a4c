"""framewatch benchmarks and test tools, beside the product (installed as framewatch.benchmarks):
the pipeline and soak benchmarks, the engine benchmark, the naive reference worker, the
test-traffic sandboxes and the GPU check. The product never imports this package; `framewatch bench`
does, when it runs."""
