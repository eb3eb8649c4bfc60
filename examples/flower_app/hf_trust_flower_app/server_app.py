"""The ServerApp: Flower's FedAvg over ``num-clients`` SuperNodes (run config); history and global parameters go to
the run config's output-dir."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from hf_trust_flower_app.task import make_federation, num_clients

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    n = num_clients(context)
    fed, parts = make_federation(num_clients=n)
    fed.serve(grid, context, num_clients=n, partitions=parts)
