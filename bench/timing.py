"""Timing shared by the benchmarks."""
import time


def best_of(fn, repeats: int = 3, warmup: bool = True) -> float:
    """Fastest of `repeats` timed calls of fn(), in seconds, after one untimed warm-up call
    (tracing, first-call and cache costs) unless warmup=False."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
