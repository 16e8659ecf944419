"""A no-op ClientApp: returns the received weights plus a small random perturbation.

Random, not constant, changes: identical chunks could be deduplicated by the transport, and histofed's bench
sites perturb their weights the same way (uniform in ±1e-3).
"""

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    rnd = int(msg.content["config"]["server-round"])
    rng = np.random.default_rng(rnd * 1000 + int(context.node_id) % 1000)
    updated = [a + rng.uniform(-1e-3, 1e-3, size=a.shape).astype(np.float32) for a in arrays]
    content = RecordDict({"arrays": ArrayRecord(updated), "metrics": MetricRecord({"num-examples": 8})})
    return Message(content=content, reply_to=msg)
