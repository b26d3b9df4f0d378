"""Work put back on the queue: retries, requeues, and the messages a dead worker left behind."""
