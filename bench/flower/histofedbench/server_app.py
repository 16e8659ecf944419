"""ServerApp: FedAvg over P random float32 parameters, recording when each round's training is configured.

Round time = gap between consecutive `configure_train` calls (it covers sending the weights, the no-op training,
receiving and aggregating the updates). Federated evaluation is off, as in histofed's bench mode.
"""

import json
import resource
import time

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


class TimedFedAvg(FedAvg):
    """FedAvg that records a time stamp at each configure_train call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stamps: list[float] = []

    def configure_train(self, server_round, arrays, config, grid):
        self.stamps.append(time.perf_counter())
        return super().configure_train(server_round, arrays, config, grid)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    rounds = int(cfg["num-server-rounds"])
    params = int(cfg["params"])
    nodes = int(cfg["min-nodes"])
    # Ten tensors, like histofed's bench model (random values: no chunk deduplication).
    rng = np.random.default_rng(7)
    sizes = [params // 10 + (1 if i < params % 10 else 0) for i in range(10)]
    initial = ArrayRecord([rng.uniform(-0.1, 0.1, size=n).astype(np.float32) for n in sizes])
    strategy = TimedFedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=nodes,
        min_available_nodes=nodes,
    )
    start = time.perf_counter()
    strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds)
    end = time.perf_counter()
    # The last round ends when start() returns.
    stamps = strategy.stamps + [end]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    out = {
        "params": params,
        "nodes": nodes,
        "rounds": rounds,
        "gaps": gaps,
        "total_secs": end - start,
        "serverapp_peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    with open(str(cfg["timings-file"]), "w") as f:
        json.dump(out, f)
